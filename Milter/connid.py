"""Connection ids for log lines.

Each MTA connection runs on its own thread; the server sets :data:`current`
there, and :class:`ConnectionIdFilter` copies it into every log record as
``record.connid``, so any module can log with ``%(connid)s`` in its format.

Ids are numbers.  With an allocator (``set_allocator``; bms uses a counter
in its state store) each process takes blocks of numbers that no other
process, worker or restart gets again; without one they count from 1 in
each process (with an optional prefix, as pymilter's ``uniqueID`` did).
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
from collections.abc import Callable

current: contextvars.ContextVar[str] = contextvars.ContextVar("milter_connection_id", default="-")

BLOCK = 100

_lock = threading.Lock()
_prefix = ""
_next = 1
_end = 0  # exclusive end of the reserved block; 0: none reserved
_allocator: Callable[[int], int] | None = None


def set_prefix(prefix: str) -> None:
    """Prefix for ids made in this process (without an allocator)."""
    global _prefix, _next, _end
    with _lock:
        _prefix = prefix
        _next, _end = 1, 0


def set_allocator(allocator: Callable[[int], int] | None) -> None:
    """``allocator(n)`` reserves ``n`` numbers for this process and returns the first."""
    global _allocator, _next, _end
    with _lock:
        _allocator = allocator
        _next, _end = 1, 0


def _after_fork() -> None:
    global _lock, _next, _end
    _lock = threading.Lock()
    _next, _end = 1, 0  # never reuse the parent's block


os.register_at_fork(after_in_child=_after_fork)


def new_id() -> str:
    global _next, _end
    with _lock:
        if _allocator is None:
            n = _next
            _next += 1
            return f"{_prefix}{n}"
        if _next >= _end:
            _next = _allocator(BLOCK)
            _end = _next + BLOCK
        n = _next
        _next += 1
        return str(n)


class ConnectionIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "connid"):
            record.connid = current.get()
        return True
