"""What the policy asks the MTA to change at end of message, and the same
changes applied to our own copy of the headers (for the archive, which must
hold the message as it was delivered)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from .decision import Decision

Header = tuple[str, str]


@dataclass(frozen=True)
class HeaderEdit:
    """``insert``: ``index`` 0 puts it at the top, -1 at the end;
    ``delete`` removes occurrence ``index`` (1-based) of ``name``;
    ``change`` sets occurrence ``index`` (1-based) to ``value`` (libmilter's
    chgheader: added at the end when there is no such occurrence)."""

    op: str  # "insert", "delete" or "change"
    name: str
    value: str = ""
    index: int = 0


@dataclass(frozen=True)
class EomResult:
    decision: Decision
    edits: tuple[HeaderEdit, ...] = ()
    body: IO[bytes] | None = None  # the replacement body (CRLF lines), read from its start
    add_rcpts: tuple[str, ...] = ()  # "<user@domain>"
    del_rcpts: tuple[str, ...] = ()  # as the MTA gave them
    new_sender: str | None = None  # "<address>" for chgfrom (SRS)
    quarantine: str = ""  # reason for the milter quarantine action (DMARC), "" for none


def _nth(headers: Sequence[Header], name: str, n: int) -> int | None:
    key = name.lower()
    seen = 0
    for i, (h, _) in enumerate(headers):
        if h.lower() == key:
            seen += 1
            if seen == n:
                return i
    return None


def apply_edits(headers: Sequence[Header], edits: Sequence[HeaderEdit]) -> list[Header]:
    """``headers`` after ``edits``, in order, as the MTA applies them."""
    out = list(headers)
    for e in edits:
        if e.op == "insert":
            if e.index == -1 or e.index >= len(out):
                out.append((e.name, e.value))
            else:
                out.insert(max(e.index, 0), (e.name, e.value))
            continue
        i = _nth(out, e.name, e.index)
        if e.op == "delete":
            if i is not None:
                del out[i]
        elif e.op == "change":
            if i is None:
                out.append((e.name, e.value))
            else:
                out[i] = (out[i][0], e.value)
    return out
