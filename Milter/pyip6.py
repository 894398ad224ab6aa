"""pymilter's ``Milter.pyip6``: IPv6 text <-> 16-byte conversion in pure
Python, with pymilter's spelling: IPv4-mapped and IPv4-compatible addresses
print as ``::FFFF:1.2.3.4`` and ``::1.2.3.4``, the longest run of zero groups
becomes ``::``, and a bare dotted quad converts to its IPv4-mapped address.

>>> import struct
>>> inet_ntop(struct.pack('!8H', 0, 0, 0, 0, 0, 0xFFFF, 0x0102, 0x0304))
'::FFFF:1.2.3.4'
>>> inet_ntop(struct.pack('!8H', 0x1234, 0x5678, 0, 0, 0, 0, 0x0102, 0x0304))
'1234:5678::102:304'
>>> inet_ntop(struct.pack('!8H', 0, 0, 0, 0x1234, 0x5678, 0, 0x0102, 0x0304))
'::1234:5678:0:102:304'
>>> inet_ntop(struct.pack('!8H', 0x1234, 0x5678, 0, 0x0102, 0x0304, 0, 0, 0))
'1234:5678:0:102:304::'
>>> inet_ntop(bytes(16))
'::'
>>> struct.unpack('!8H', inet_pton('1234::5678'))
(4660, 0, 0, 0, 0, 0, 0, 22136)
>>> struct.unpack('!8H', inet_pton('::FFFF:1.2.3.4'))
(0, 0, 0, 0, 0, 65535, 258, 772)
>>> struct.unpack('!8H', inet_pton('1.2.3.4'))
(0, 0, 0, 0, 0, 65535, 258, 772)
>>> inet_pton('::1.2.3.4.5')
Traceback (most recent call last):
  ...
ValueError: ::1.2.3.4.5
"""

from __future__ import annotations

import re
import struct

__all__ = ["PAT_IP4", "RE_IP4", "inet_ntop", "inet_pton"]

PAT_IP4 = r"\.".join([r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]\d|\d)"] * 4)
#: A dotted quad at the end of a string.
RE_IP4 = re.compile(r"(?<![\d.])" + PAT_IP4 + "$")
_GROUP = re.compile(r"[0-9a-fA-F]{1,4}\Z")


def inet_ntop(packed: bytes) -> str:
    """The text form of the 16-byte IPv6 address ``packed``."""
    if len(packed) != 16:
        raise ValueError("an IPv6 address is 16 bytes")
    groups = struct.unpack("!8H", packed)
    if not any(groups):
        return "::"
    if not any(groups[:5]) and groups[5] in (0, 0xFFFF):
        quad = ".".join(str(b) for b in packed[12:])
        return ("::FFFF:" if groups[5] else "::") + quad
    best_start, best_len = -1, 0
    start = None
    for i, g in enumerate((*groups, 1)):
        if g == 0 and i < 8:
            start = i if start is None else start
        elif start is not None:
            if i - start > best_len:
                best_start, best_len = start, i - start
            start = None
    text = [f"{g:x}" for g in groups]
    if best_len < 1:
        return ":".join(text)
    head = ":".join(text[:best_start])
    tail = ":".join(text[best_start + best_len:])
    return f"{head}::{tail}"


def _groups(text: str) -> list[int]:
    if not text:
        return []
    values = []
    for part in text.split(":"):
        if not _GROUP.match(part):
            raise ValueError(part)
        values.append(int(part, 16))
    return values


def inet_pton(p: str) -> bytes:
    """The 16 bytes of the IPv6 address written ``p``; ``ValueError(p)``
    if it is not one."""
    text = p
    tail: list[int] = []
    quad = RE_IP4.search(text)
    if quad:
        octets = [int(o) for o in quad.group().split(".")]
        if quad.start() == 0:
            return struct.pack("!8H", 0, 0, 0, 0, 0, 0xFFFF,
                               octets[0] << 8 | octets[1], octets[2] << 8 | octets[3])
        text = text[:quad.start()]
        if not text.endswith(":"):
            raise ValueError(p)
        text = text[:-1] if not text.endswith("::") else text
        tail = [octets[0] << 8 | octets[1], octets[2] << 8 | octets[3]]
    try:
        halves = text.split("::")
        if len(halves) > 2:
            raise ValueError(p)
        if len(halves) == 2:
            left, right = _groups(halves[0]), _groups(halves[1]) + tail
            if len(left) + len(right) > 7:
                raise ValueError(p)
            groups = left + [0] * (8 - len(left) - len(right)) + right
        else:
            groups = _groups(text) + tail
        if len(groups) != 8:
            raise ValueError(p)
        return struct.pack("!8H", *groups)
    except ValueError:
        raise ValueError(p) from None
