"""The log file handler: a :class:`logging.handlers.WatchedFileHandler` that
looks for a logrotate move at most once per second instead of at every
record.

The stdlib handler calls ``os.stat`` on the file name before each record (a
third of a record's cost, six records per message).  Here the check runs
when a second has passed since the last one, so records written in the
second after ``mv milter.log milter.log.1`` still go to the moved file
(nothing is lost; logrotate's ``delaycompress`` or the SIGUSR1 reopen in
bms's logrotate recipe make that second harmless) and the next one reopens
``milter.log``.

Each record is written with :func:`Milter.gilio.write_all`, which keeps the
GIL through the ``write(2)``, and without the handler's lock.  The file
object's own write lets the GIL go, and the lock, held while the interpreter
switches threads, makes every other connection's thread that logs wait
(the log is written several times per message by each of them): two
``futex`` calls and a context switch each time.  With no lock on the write
path, the file descriptor must never be closed under a writer: a reopen
(logrotate's move, SIGUSR1) puts the new file on the same descriptor with
``dup2``, and :meth:`~RotationAwareFileHandler.close` points it at
``/dev/null`` (a record that races the close is dropped, never written into
another file that reused the number); the descriptor itself is closed with
the handler object, when no thread can be writing through it any more.

Measured with 10 threads running the full policy on the typical message in
one process, the state store's reads left out, ``futex`` calls per message
(``strace -f -c``): 44 with the GIL kept but the lock taken, 6 without it.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import time
import weakref
from typing import Final

from Milter import gilio

CHECK_INTERVAL: Final = 1.0  # seconds between looks for a moved file


class RotationAwareFileHandler(logging.handlers.WatchedFileHandler):
    """``WatchedFileHandler`` with the move check throttled and writes that
    keep the GIL and take no lock (see the module)."""

    def __init__(self, filename: str, mode: str = "a", encoding: str | None = None,
                 delay: bool = False, errors: str | None = None) -> None:
        self._retired = False
        super().__init__(filename, mode, encoding, delay, errors)
        self._next_check = time.monotonic() + CHECK_INTERVAL

    def reopenIfNeeded(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + CHECK_INTERVAL
        try:
            found = os.stat(self.baseFilename)
        except FileNotFoundError:
            found = None
        if found is None or (found.st_dev, found.st_ino) != (self.dev, self.ino):
            self.reopen()

    def reopen(self) -> None:
        """Open the file by its name again (after logrotate moved it) onto the
        same descriptor."""
        with self.lock:  # type: ignore[union-attr]
            if self._retired:
                return
            fresh = self._open()
            if self.stream is None:
                self.stream = fresh
            else:
                try:
                    os.dup2(fresh.fileno(), self.stream.fileno())
                finally:
                    fresh.close()
            self._statstream()  # type: ignore[attr-defined]

    def handle(self, record: logging.LogRecord) -> bool:
        """As ``Handler.handle``, without the handler's lock (see the module)."""
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        """The record's line, written at once (no buffer to flush)."""
        try:
            text = self.format(record) + self.terminator
            stream = self.stream
            if stream is None:
                self.reopen()
                stream = self.stream
                if stream is None:
                    return
            self.reopenIfNeeded()
            gilio.write_all(stream.fileno(), text.encode(stream.encoding,
                                                         stream.errors or "strict"))
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        """Send what still comes to ``/dev/null``; the descriptor is closed
        when the handler object goes (see the module)."""
        with self.lock:  # type: ignore[union-attr]
            stream = self.stream
            if stream is not None and not self._retired:
                null = os.open(os.devnull, os.O_WRONLY)
                try:
                    os.dup2(null, stream.fileno())
                finally:
                    os.close(null)
                weakref.finalize(self, stream.close)  # with the handler, not before
            self._retired = True
        logging.Handler.close(self)
