"""Custom SMTP reply text, built and checked as libmilter's ``smfi_setreply`` /
``smfi_setmlreply`` do (PROTOCOL.md §4.2), plus the checks Postfix applies.

A text that either MTA would refuse raises :class:`InvalidReply` here, at the
call, instead of surfacing later as a milter error in the MTA's log.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from .errors import InvalidReply

MAX_LINE: Final = 980  # MAXREPLYLEN
MAX_LINES: Final = 32  # MAXREPLIES

_RCODE: Final = re.compile(rb"[45][0-9][0-9]\Z")
_XCODE: Final = re.compile(rb"[245]\.[0-9]{1,3}\.[0-9]{1,3}\Z")


def build_reply(rcode: bytes, xcode: bytes | None, lines: Sequence[bytes]) -> bytes:
    """The REPLYCODE payload text (without the final NUL).

    One line (or none): ``rcode SP [xcode] [SP text]``, exactly like
    ``smfi_setreply``.  Two or more: ``rcode-xcode text CRLF … rcode SP xcode
    text``, with ``xcode`` defaulting to ``4.0.0``/``5.0.0`` (``smfi_setmlreply``).
    """
    if not _RCODE.match(rcode):
        raise InvalidReply(f"reply code must be 4xx or 5xx, got {rcode!r}")
    if xcode is not None:
        if not _XCODE.match(xcode):
            raise InvalidReply(f"extended code must look like 5.7.1, got {xcode!r}")
        if xcode[:1] != rcode[:1]:
            # Postfix treats a class mismatch as a configuration error.
            raise InvalidReply(f"extended code {xcode!r} does not match reply class {rcode!r}")
    if len(lines) > MAX_LINES:
        raise InvalidReply(f"at most {MAX_LINES} reply lines, got {len(lines)}")
    for line in lines:
        if b"\r" in line or b"\n" in line or b"\0" in line:
            raise InvalidReply("reply text may not contain CR, LF or NUL")
        if len(line) > MAX_LINE:
            raise InvalidReply(f"reply line longer than {MAX_LINE} bytes")
    if len(lines) <= 1:
        out = rcode + b" "
        if xcode is not None:
            out += xcode
        if lines:
            if xcode is not None:
                out += b" "
            out += lines[0]
        return out
    xc = xcode if xcode is not None else (b"4.0.0" if rcode[:1] == b"4" else b"5.0.0")
    last = len(lines) - 1
    return b"\r\n".join(
        rcode + (b" " if i == last else b"-") + xc + b" " + line for i, line in enumerate(lines)
    )
