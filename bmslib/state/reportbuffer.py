"""DMARC aggregate-report counts, gathered in memory and written to the state
store in one go.

Every outside message with a DMARC result adds 1 to a counter of its day and
report row (:mod:`bmslib.policy.dmarcreport`).  Written one by one, that is a
write transaction per message: the statement, SQLite's file locks and WAL
pages, and for each of them the GIL handed to another connection's thread
and waited for.  Here a message only adds to a dict; the counts go to the
store when :data:`FLUSH_SECONDS` have passed since the last write (from the
message that finds them due), when :data:`FLUSH_ROWS` different rows are
waiting, at a reload (SIGHUP) and when the daemon stops.

So a report run while the daemon serves sees the counts of up to a minute
before it; ``kill -HUP`` first makes it see all.  A daemon that is killed
(SIGKILL, power loss) loses the counts of its last minute; a store that is
down when they are due loses those counts (one warning line), never mail.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Final

from ..interfaces import Clock, ReportCounters
from ..policy.greylist import StoreUnavailable

__all__ = ["FLUSH_ROWS", "FLUSH_SECONDS", "ReportBuffer"]

log = logging.getLogger("bms")

FLUSH_SECONDS: Final = 60.0
FLUSH_ROWS: Final = 1000


class ReportBuffer:
    """Counts per ``(day, key)`` waiting for :meth:`flush`; thread-safe."""

    def __init__(self, store: ReportCounters, clock: Clock,
                 seconds: float = FLUSH_SECONDS, rows: int = FLUSH_ROWS) -> None:
        self.store = store
        self.clock = clock
        self.seconds = seconds
        self.rows = rows
        self._counts: dict[tuple[int, str], int] = {}
        self._lock = threading.Lock()
        self._due = clock.now() + seconds

    def count(self, day: int, key: str) -> None:
        """Add 1 to the counter ``key`` of ``day``; write what waits when due."""
        with self._lock:
            counts = self._counts
            counts[(day, key)] = counts.get((day, key), 0) + 1
            due = len(counts) >= self.rows or self.clock.now() >= self._due
        if due:
            self.flush()

    def pending(self) -> int:
        """How many counts wait to be written."""
        with self._lock:
            return sum(self._counts.values())

    def flush(self) -> None:
        """Write every waiting count to the store now."""
        with self._lock:
            counts, self._counts = self._counts, {}
            self._due = self.clock.now() + self.seconds
        written = 0
        try:
            for (day, key), n in counts.items():
                self.store.report_count(day, key, n)
                written += n
        except (StoreUnavailable, sqlite3.Error, OSError) as exc:
            lost = sum(counts.values()) - written
            log.warning("DMARC report counts: %d lost, the state store failed: %s", lost, exc)
