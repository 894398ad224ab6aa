"""Outside text made safe where it is formatted: one helper per kind of output.

Text from outside (SMTP arguments, macros such as ``j``, header values, DNS
answers, file names, AUTH names) reaches four kinds of output, and each has
one helper here that escapes or quotes it and cuts it to a bound:

* :func:`reply_line` / :func:`setreply_line`: a line of an SMTP reply
  (``setreply``).  Printable ASCII only, at most :data:`MAX_REPLY_LINE`
  bytes; ``setreply_line`` also doubles ``%`` (sendmail treats the text as a
  printf format) without ever leaving half a pair at the cut.
* :func:`header_value` / :func:`host_name`: text inside a header field we add
  (Received-SPF, Authentication-Results, Sender, DKIM results), or a host name
  we present as ours (the authserv-id, ``receiver=``, the CBV HELO).
  Printable ASCII only, so no value can start a header of its own.
* :func:`envelope_address`: an address for an envelope rewrite (``chgfrom``
  of SRS, ``addrcpt``).  SMTP has no escape for control characters in a path,
  so an address that is not sendable is refused (``None``), never altered.
* :func:`log_text`: one field of a ``milter.log`` line.  One line, printable,
  at most :data:`LOG_LIMIT` characters plus a marker saying how much was cut.

The guards of the framework (``Milter.context`` for header values and
envelope arguments, ``Milter.protocol.replytext`` for replies) stay: they
protect the wire from any milter.  With these helpers at every call site, they
never have to refuse bms's own output (that would be a 451 instead of the
verdict; issue 13).
"""

from __future__ import annotations

import re
from typing import Final

MAX_REPLY_LINE: Final = 900  # bytes; the MTA takes 980 per line including the codes
HEADER_LIMIT: Final = 900  # characters of one value (a header line stays under 998)
HOST_LIMIT: Final = 255  # RFC 1035: a host name is at most 255 octets
ENVELOPE_LIMIT: Final = 512  # characters of a path; the SMTP command line limit
LOG_LIMIT: Final = 500

_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")
_LOG_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u0080-\u009f\u2028\u2029\ud800-\udfff]")
# C0 controls, DEL, C1 controls and surrogates (undecodable 8-bit bytes): no
# SMTP path may carry them, quoted or not (RFC 5321 qtextSMTP, RFC 6531).
_PATH_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u0080-\u009f\ud800-\udfff]")


def _backslashed(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape", "backslashreplace").decode("ascii")


def _printable_ascii(text: str) -> str:
    """``text`` with every character that is not printable ASCII written as
    ``\\xNN``/``\\uNNNN`` (8-bit bytes kept as surrogates show as ``\\udcNN``)."""
    if text.isascii() and text.isprintable():
        return text
    return _NOT_PRINTABLE_ASCII.sub(_backslashed, text)


def _cut(text: str, limit: int, marker: str = "...") -> str:
    return text if len(text) <= limit else text[:max(0, limit - len(marker))] + marker


def _escaped_cut(text: str, limit: int) -> str:
    """:func:`_printable_ascii` of ``text`` cut to ``limit``; escaping only
    makes text longer, so only the first ``limit`` characters are looked at
    (the work stays bounded for a HELO of 100 KB, issue 13 item 6)."""
    return _cut(_printable_ascii(text[:limit + 1]), limit)


# --- replies -----------------------------------------------------------------------

def reply_line(text: str, limit: int = MAX_REPLY_LINE) -> str:
    """One line of SMTP reply text: printable ASCII (CR, LF, NUL, ESC, 8-bit
    text as backslash escapes), cut to ``limit`` bytes."""
    return _escaped_cut(text, limit)


def setreply_line(text: str, limit: int = MAX_REPLY_LINE) -> str:
    """:func:`reply_line` with every ``%`` doubled, as ``setreply`` needs it
    (sendmail's ``smfi_setreply`` text is a printf format); the cut never
    splits a doubled ``%`` and the result stays within ``limit``."""
    safe = reply_line(text, limit).replace("%", "%%")
    if len(safe) <= limit:
        return safe
    # rstrip: never leave half of a doubled %.
    return safe[:limit - 3].rstrip("%") + "..."


# --- headers -----------------------------------------------------------------------

def header_value(text: str, limit: int = HEADER_LIMIT) -> str:
    """Text for a header field we add: printable ASCII only (a DNS answer, a
    HELO or an address can put anything into it), cut at ``limit``."""
    return _escaped_cut(text, limit)


def host_name(text: str, default: str = "localhost") -> str:
    """A host name the MTA gave us for ourselves (macro ``j``), as it goes into
    our headers and our SMTP greetings: trimmed, printable ASCII without
    spaces (others escaped), at most :data:`HOST_LIMIT` characters;
    ``default`` when empty."""
    name = text.strip()
    if not name:
        return default
    return _cut(_printable_ascii(name[:HOST_LIMIT + 1]).replace(" ", "\\x20"), HOST_LIMIT)


# --- envelope rewrites --------------------------------------------------------------

def envelope_address(path: str, limit: int = ENVELOPE_LIMIT) -> str | None:
    """``path`` (``<local@domain>``) when it can be sent as an envelope
    address (``chgfrom``, ``addrcpt``), else ``None``: no control or
    undecodable characters, balanced brackets, not empty, at most ``limit``
    characters.  Never altered: a changed address would deliver elsewhere."""
    if not path or len(path) > limit or _PATH_UNSAFE.search(path):
        return None
    inner = path[1:-1] if path.startswith("<") and path.endswith(">") else path
    if not inner or "<" in inner or ">" in inner:
        return None
    return path


# --- logs --------------------------------------------------------------------------

def log_text(text: object, limit: int = LOG_LIMIT) -> str:
    """One-line, printable form of untrusted text for ``milter.log``; longer
    than ``limit``: cut and marked with the number of characters left out."""
    s = text if isinstance(text, str) else str(text)
    more = max(0, len(s) - limit)
    if more:
        s = s[:limit]  # before escaping: the work stays bounded
    if _LOG_UNSAFE.search(s):
        s = _LOG_UNSAFE.sub(_backslashed, s)
        if len(s) > limit:
            more += len(s) - limit
            s = s[:limit]
    return s + f"...({more} more)" if more else s
