"""The log file handler: a :class:`logging.handlers.WatchedFileHandler` that
looks for a logrotate move at most once per second instead of at every
record.

The stdlib handler calls ``os.stat`` on the file name before each record (a
third of a record's cost, six records per message).  Here the check runs
when a second has passed since the last one, so records written in the
second after ``mv milter.log milter.log.1`` still go to the moved file
(nothing is lost; logrotate's ``delaycompress`` or the SIGUSR1 reopen in
bms's logrotate recipe make that second harmless) and the next one reopens
``milter.log``."""

from __future__ import annotations

import logging.handlers
import time
from typing import Final

CHECK_INTERVAL: Final = 1.0  # seconds between looks for a moved file


class RotationAwareFileHandler(logging.handlers.WatchedFileHandler):
    """``WatchedFileHandler`` with the move check throttled (see the module)."""

    def __init__(self, filename: str, mode: str = "a", encoding: str | None = None,
                 delay: bool = False, errors: str | None = None) -> None:
        super().__init__(filename, mode, encoding, delay, errors)
        self._next_check = time.monotonic() + CHECK_INTERVAL

    def reopenIfNeeded(self) -> None:
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + CHECK_INTERVAL
        super().reopenIfNeeded()
