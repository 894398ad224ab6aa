"""Everything the daemon needs, loaded before it switches to ``[milter] user``.

The interpreter, the standard library or the virtualenv may live where that
user cannot read (a pyenv or venv under /root): what Python imports lazily
(resource readers, codecs for the charsets of incoming mail, Prometheus'
multiprocess parts) and the shipped DSN templates are loaded here, as root.
After the switch :func:`unreadable_paths` names what the user cannot read, for
one warning line instead of a traceback later.
"""

from __future__ import annotations

import encodings
import importlib
import os
import pkgutil
import sys
import sysconfig
from collections.abc import Iterable

from .policy.dsn import TEMPLATE_NAMES, shipped_template

# Imported lazily by the standard library or by our dependencies.  (Not
# prometheus_client: it must be imported after its multiprocess directory is
# set, when the metrics start; an import failure there is one line too.)
MODULES = (
    "importlib.readers", "importlib.resources.readers", "importlib.metadata",
    "dns.nameserver", "email.mime.text",
    "email.mime.multipart", "email.generator", "smtplib", "zipfile", "json",
    "http.server", "wsgiref.simple_server", "ssl",
)


# Where the standard library is (sysconfig itself imports lazily: ask now).
STDLIB = sysconfig.get_paths()["stdlib"]
LOADED_FROM: list[str] = []  # the directories of STDLIB and sys.path, set by preload()


def preload() -> None:
    """Import :data:`MODULES` and every codec, read the shipped templates."""
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ImportError:  # optional, or not in this version of a library
            continue
    for info in pkgutil.iter_modules(encodings.__path__):
        try:
            importlib.import_module(f"encodings.{info.name}")
        except (ImportError, LookupError):  # codecs of other platforms (mbcs, ...)
            continue
    for name in TEMPLATE_NAMES:
        shipped_template(name)
    LOADED_FROM[:] = [p for p in (STDLIB, *sys.path) if p and os.path.isdir(p)]


def unreadable_warning(user: str) -> str | None:
    """One line for the log when the user cannot read the interpreter's files."""
    paths = unreadable_paths()
    if not paths:
        return None
    return (f"user {user} cannot read {paths[0]}" + (f" (and {len(paths) - 1} more)"
                                                      if len(paths) > 1 else "")
            + ": bms loaded what it needs before switching, but nothing more can be "
            "imported; install bms where that user can read (README: a venv in /opt/bms)")


def unreadable_paths(paths: Iterable[str] | None = None) -> list[str]:
    """The directories of the interpreter and of ``sys.path`` that existed at
    :func:`preload` (as root) but the current user cannot read."""
    found: list[str] = []
    for path in (LOADED_FROM if paths is None else paths):
        if path not in found and not os.access(path, os.R_OK | os.X_OK):
            found.append(path)
    return found
