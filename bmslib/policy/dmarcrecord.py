"""DMARC policy records (RFC 7489 §6.3, with the settled DMARCbis changes):
the TXT text of ``_dmarc.<domain>`` parsed into a :class:`DmarcRecord`.

Parsing is a function and never raises: a record that is not DMARC at all
(no leading ``v=DMARC1``) gives None, and so does any text that cannot be a
record.  Inside a DMARC record, tags are lenient the way receivers are:

* ``p``: ``none``, ``quarantine``, ``reject``; missing or invalid means
  ``none`` (RFC 7489 §6.6.3 does so when ``rua`` is valid; DMARCbis always);
* ``sp`` defaults to ``p``; ``np`` (RFC 9091, DMARCbis) defaults to ``sp``;
* ``adkim`` / ``aspf``: ``r`` (default) or ``s``; anything else is ``r``;
* ``pct``: 0 to 100 (default 100, also for anything unusable);
* ``t`` (DMARCbis test mode): ``y`` counts like ``pct=0``;
* ``rua``: the ``mailto:`` addresses aggregate reports go to;
* every other tag (``ruf``, ``fo``, ``rf``, ``ri``, ``psd``, unknown ones) is
  ignored; a tag given twice keeps its first value.

:func:`select_record` applies the discovery rule of RFC 7489 §6.6.3 to the
TXT records of one name: exactly one record starting with ``v=DMARC1``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

POLICIES = ("none", "quarantine", "reject")
MAX_RECORD = 4096  # characters of TXT text looked at; longer is no DMARC record

_VERSION = re.compile(r"\s*v\s*=\s*DMARC1\s*(;|\Z)", re.IGNORECASE)
_MAILTO = re.compile(r"mailto:([^\s,!;]+@[^\s,!;]+)", re.IGNORECASE)


@dataclass(frozen=True)
class DmarcRecord:
    p: str = "none"
    sp: str = "none"
    np: str = "none"
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    testing: bool = False  # t=y
    rua: tuple[str, ...] = ()  # report addresses (without "mailto:")
    p_valid: bool = True  # False: p was missing or invalid and "none" stands in

    def published(self) -> str:
        """The policy tags for logs and Authentication-Results comments."""
        text = f"p={self.p} sp={self.sp} pct={self.pct}"
        if self.np != self.sp:
            text += f" np={self.np}"
        return text + (" t=y" if self.testing else "")


def is_dmarc(text: str) -> bool:
    """Whether TXT text claims to be a DMARC record (starts with ``v=DMARC1``)."""
    return _VERSION.match(text[:64]) is not None


def _tags(text: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if not eq:
            continue
        tags.setdefault(name.strip().lower(), value.strip())
    return tags


def _policy(value: str | None) -> str | None:
    v = (value or "").lower()
    return v if v in POLICIES else None


def parse_record(text: str) -> DmarcRecord | None:
    """The record in ``text``, or None when it is not a DMARC record."""
    if len(text) > MAX_RECORD or not is_dmarc(text):
        return None
    tags = _tags(text)
    p = _policy(tags.get("p"))
    sp = _policy(tags.get("sp")) or p or "none"
    np = _policy(tags.get("np")) or sp
    pct = 100
    raw_pct = tags.get("pct", "")
    if raw_pct.isascii() and raw_pct.isdigit() and int(raw_pct) <= 100:
        pct = int(raw_pct)
    return DmarcRecord(
        p=p or "none", sp=sp, np=np,
        adkim="s" if tags.get("adkim", "").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "").lower() == "s" else "r",
        pct=pct, testing=tags.get("t", "").lower() == "y",
        rua=tuple(m.group(1).lower() for m in _MAILTO.finditer(tags.get("rua", ""))),
        p_valid=p is not None)


def select_record(texts: Sequence[bytes]) -> tuple[DmarcRecord | None, str]:
    """``(record, problem)`` for the TXT records of ``_dmarc.<domain>``:
    the one DMARC record, or None with ``problem`` "" (there is none) or a
    reason (several records: discovery ends, RFC 7489 §6.6.3)."""
    found = [t for t in (raw.decode("ascii", "replace") for raw in texts) if is_dmarc(t)]
    if not found:
        return None, ""
    if len(found) > 1:
        return None, f"{len(found)} DMARC records"
    record = parse_record(found[0])
    return record, "" if record is not None else "record too long"
