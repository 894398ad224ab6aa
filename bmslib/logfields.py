"""The structured fields of a log line (``[milter] log_format = json``).

Connection facts come from the connection's :class:`bmslib.milter.BmsMilter`,
which binds a function returning them (the stage of the callback running,
client IP, sender, recipients, queue id) when the connection starts
(:func:`bind`), in a context variable of the connection's thread next to
:data:`Milter.connid.current`.  Decision lines carry ``verdict`` and
``reason`` through ``extra=`` (:func:`decision`).  The text lines do not
change: these fields are only read by :class:`bmslib.logtarget.JsonFormatter`."""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Mapping

from Milter import connid

Facts = Callable[[], Mapping[str, object]]

FACTS = ("stage", "client_ip", "sender", "recipients", "queue_id")  # what a connection gives

_facts: contextvars.ContextVar[tuple[str, Facts] | None] = contextvars.ContextVar(
    "bms_connection_facts", default=None)


def bind(facts: Facts) -> None:
    """``facts()`` describes the current connection (client IP, sender, ...)."""
    _facts.set((connid.current.get(), facts))


def decision(verdict: str, reason: str) -> dict[str, str]:
    """``extra=`` for a decision line: its verdict and reason tag."""
    return {"verdict": verdict.lower(), "reason": reason}


def fields(record: logging.LogRecord) -> dict[str, object]:
    """The structured fields of ``record``: stage, verdict, reason and the
    facts of its connection (when the record is of the bound connection)."""
    out: dict[str, object] = {"verdict": getattr(record, "verdict", None),
                              "reason": getattr(record, "reason", None),
                              **dict.fromkeys(FACTS)}
    bound = _facts.get()
    if bound is not None and bound[0] == getattr(record, "connid", None):
        try:
            out.update(bound[1]())
        except Exception:  # a log line never fails for its fields
            out["fields_error"] = True
    return out
