"""Connection ids for log lines.

Each MTA connection runs on its own thread; the server sets :data:`current`
there, and :class:`ConnectionIdFilter` copies it into every log record as
``record.connid``, so any module can log with ``%(connid)s`` in its format.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import threading

current: contextvars.ContextVar[str] = contextvars.ContextVar("milter_connection_id", default="-")

_lock = threading.Lock()
_counter = itertools.count(1)
_prefix = ""


def set_prefix(prefix: str) -> None:
    """Prefix for ids made in this process (a worker number, say) and restart
    the counter, so ids stay unique across worker processes."""
    global _prefix, _counter
    with _lock:
        _prefix = prefix
        _counter = itertools.count(1)


def new_id() -> str:
    with _lock:
        return f"{_prefix}{next(_counter)}"


class ConnectionIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "connid"):
            record.connid = current.get()
        return True
