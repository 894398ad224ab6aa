"""Logging for admins: ``milter.log`` lines like

    2026Nov24 12:01:04 [12430] REJECT: zombie PC at 192.0.2.7 sending MAIL FROM a@b.example

The connection id comes from :mod:`Milter.connid` through a filter; every
text that came from the network goes through :func:`escape` (:mod:`bmslib.safetext`), so a hostile
HELO, header or DNS answer cannot start a line of its own or paint the
terminal.  The file handler reopens the file when logrotate moved it.
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import sys
from typing import Final

from Milter import connid

from . import private
from .logfile import RotationAwareFileHandler
from .safetext import log_text

LOG_FORMAT: Final = "%(asctime)s [%(connid)s] %(message)s"
DATE_FORMAT: Final = "%Y%b%d %H:%M:%S"
LOG_FILE: Final = "milter.log"

# One-line, printable, bounded form of untrusted text (bmslib.safetext).
escape = log_text


class _Formatter(logging.Formatter):
    """The stdlib formatter, with the date text of the current second kept:
    ``asctime`` (whole seconds, no ``%f``) is the same for every record of a
    second, and ``time.strftime`` is a good part of a record's cost."""

    def __init__(self, fmt: str, datefmt: str) -> None:
        super().__init__(fmt, datefmt)
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        cached = self._second  # one tuple: threads see a consistent pair
        if cached[0] == second and datefmt == self.datefmt:
            return cached[1]
        text = super().formatTime(record, datefmt)
        if datefmt == self.datefmt:
            self._second = (second, text)
        return text


class _PrivateFileHandler(RotationAwareFileHandler):
    """milter.log created 0600 (also when reopened after logrotate moved it)."""

    def _open(self) -> io.TextIOWrapper:
        private.create_file(self.baseFilename)
        return super()._open()


def make_handler(logdir: str | None) -> logging.Handler:
    """A handler writing ``logdir/milter.log`` (stderr when ``logdir`` is
    None) in the bms format, not yet installed.  OSError when the file
    cannot be opened."""
    handler: logging.Handler
    if logdir:
        private.make_dir(logdir)
        handler = _PrivateFileHandler(os.path.join(logdir, LOG_FILE))
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(LOG_FORMAT, DATE_FORMAT))
    return mark_handler(handler)


def mark_handler(handler: logging.Handler) -> logging.Handler:
    """Give ``handler`` the connection id of every record, and mark it as
    bms's own (:func:`install_handler` replaces only those)."""
    handler.addFilter(connid.ConnectionIdFilter())
    setattr(handler, "bms_handler", True)  # noqa: B010 - a marker on a stdlib object
    return handler


def install_handler(handler: logging.Handler, level: int = logging.INFO) -> logging.Handler:
    """Make ``handler`` the destination of every record: it replaces the
    handler installed before (closed), other handlers are left alone."""
    root = logging.getLogger()
    root.addHandler(handler)  # first: no record falls between the two
    for old in root.handlers[:]:
        if old is not handler and getattr(old, "bms_handler", False):
            root.removeHandler(old)
            old.close()
    root.setLevel(level)
    # No format of ours shows the thread, the process or the calling line:
    # spare every record current_thread(), getpid() and the stack walk that
    # finds its caller (the logging HOWTO's "Optimization" settings).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None  # type: ignore[attr-defined]
    return handler


def setup_logging(logdir: str | None, level: int = logging.INFO) -> logging.Handler:
    """Send every log record to ``logdir/milter.log`` (stderr when ``logdir``
    is None), in the bms format.  Returns the handler."""
    return install_handler(make_handler(logdir), level)


def reopen_logs() -> None:
    """Reopen log files (SIGUSR1, after a logrotate that moved them)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, RotationAwareFileHandler):
            handler.reopen()  # onto the same descriptor: its writers take no lock
        elif isinstance(handler, logging.FileHandler):
            handler.acquire()
            try:
                if handler.stream:
                    handler.stream.close()
                handler.stream = handler._open()
            finally:
                handler.release()
