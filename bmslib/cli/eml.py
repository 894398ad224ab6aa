"""A message file (``.eml``) as an MTA hands it to a milter: header fields
one by one, then the body with CRLF line ends."""

from __future__ import annotations

import re

_LINE_END = re.compile(rb"\r?\n")


def split_message(raw: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """Header fields as the milter gets them — (name, value without the leading
    space, folds kept as "\\n" plus the continuation line, 8-bit bytes as
    surrogate escapes) — and the body after the blank line.  A line that is neither
    a field nor a continuation ends the header block (the MTA puts the blank line
    before it); without a blank line the body is empty."""
    headers: list[tuple[str, str]] = []
    pos = 0
    while pos < len(raw):
        eol = raw.find(b"\n", pos)
        nxt = len(raw) if eol < 0 else eol + 1
        line = raw[pos:nxt].rstrip(b"\r\n")
        if not line:
            return headers, raw[nxt:]
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + "\n" + _text(line))
        elif b":" in line:
            name_b, _, value_b = line.partition(b":")
            headers.append((_text(name_b.strip()), _text(value_b.lstrip(b" \t"))))
        else:
            return headers, raw[pos:]
        pos = nxt
    return headers, b""


def crlf(body: bytes) -> bytes:
    """``body`` with every line ending in CRLF, as SMTP carries it (a file
    stored with LF line ends is sent so)."""
    return _LINE_END.sub(b"\r\n", body)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")
