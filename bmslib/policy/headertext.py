"""Text that goes into the header fields we add (Received-SPF,
Authentication-Results): printable ASCII only, bounded, so a hostile HELO,
address, AUTH user or DNS answer cannot inject a line
(:func:`bmslib.safetext.header_value` does the work)."""

from __future__ import annotations

import re

from ..safetext import header_value

_TOKEN = re.compile(r"[A-Za-z0-9.@_+=!#$%&'*/?^`{|}~-]+")


def header_safe(text: str, limit: int = 900) -> str:
    """Printable ASCII only (a DNS answer or a HELO can put anything into
    pyspf's text): other characters as ``\\xNN``/``\\uNNNN``, cut at ``limit``."""
    return header_value(text, limit)


def pvalue(value: str) -> str:
    """An RFC 8601 pvalue: the text as is when it has no special characters,
    else a quoted string (printable ASCII only)."""
    v = header_safe(value, 255)
    if v and _TOKEN.fullmatch(v):
        return v
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
