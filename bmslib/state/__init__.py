"""Shared mutable state behind one interface (SPEC §6,
:class:`bmslib.interfaces.StateStore`): the embedded SQLite store in datadir
by default, Redis (:mod:`bmslib.state.redis`) for a cluster.  Everything that
must be seen by every worker process (and, with the cluster backend, every MX
host) lives here; :mod:`bmslib.state.legacy` imports the original flat files
once."""

from .legacy import LegacyImport, import_legacy
from .sqlite import SqliteStore

__all__ = ["LegacyImport", "SqliteStore", "import_legacy"]
