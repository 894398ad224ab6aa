"""Shared mutable state behind one interface (SPEC §6): the embedded SQLite
store in datadir by default.  Everything that must be seen by every worker
process (and, with the cluster backend, every MX host) lives here."""

from .sqlite import SqliteStore

__all__ = ["SqliteStore"]
