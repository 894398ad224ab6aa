"""pymilter's ``Milter.utils``: small address and header helpers.

IP addresses (``ip4re``, ``ip6re``, ``addr2bin``, ``bin2long6``, ``cidr``,
``iniplist``), e-mail addresses (``parseaddr``, ``parse_addr``) and encoded
header words (``parse_header``), with pymilter's names and results.

>>> parse_addr('<user@example.com>')
['user', 'example.com']
>>> iniplist('10.1.2.3', ['10.0.0.0/8'])
True
"""

from __future__ import annotations

import binascii
import email.errors
import email.utils
import ipaddress
import re
import socket
from collections.abc import Iterable
from email.header import decode_header
from fnmatch import fnmatchcase

__all__ = [
    "MASK",
    "MASK6",
    "PAT_IP4",
    "addr2bin",
    "bin2long6",
    "cidr",
    "decode",
    "dnsre",
    "inet_ntop",
    "inet_pton",
    "iniplist",
    "ip4re",
    "ip6re",
    "parse_addr",
    "parse_header",
    "parseaddr",
]

#: A host name as ``iniplist`` accepts it in place of an address.
dnsre = re.compile(r"^[a-z][-a-z\d.]+$", re.IGNORECASE)

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]\d|\d)"
#: A dotted-quad IPv4 address (pattern text, unanchored).
PAT_IP4 = r"\.".join([_OCTET] * 4)
#: A whole IPv4 address in dotted-quad form.
ip4re = re.compile(PAT_IP4 + "$")


def _ip6_pattern() -> str:
    h16 = "[0-9a-f]{1,4}"
    ls32 = f"(?:{h16}:{h16}|{PAT_IP4})"
    # RFC 4291 section 2.2 forms: n groups before "::", the rest after it.
    forms = [f"(?:{h16}:){{6}}{ls32}", f"::(?:{h16}:){{5}}{ls32}"]
    for before, after in ((0, f"(?:{h16}:){{4}}{ls32}"), (1, f"(?:{h16}:){{3}}{ls32}"),
                          (2, f"(?:{h16}:){{2}}{ls32}"), (3, f"{h16}:{ls32}"),
                          (4, ls32), (5, h16), (6, "")):
        head = f"(?:{h16})?" if before == 0 else f"(?:(?:{h16}:){{0,{before}}}{h16})?"
        forms.append(f"{head}::{after}")
    return "|".join(f"(?:{form})$" for form in forms)


#: A whole IPv6 address in any RFC 4291 text form.
ip6re = re.compile(_ip6_pattern(), re.IGNORECASE)

MASK = 0xFFFFFFFF
MASK6 = (1 << 128) - 1


def inet_ntop(packed: bytes) -> str:
    """The text form of a 16-byte IPv6 address."""
    return socket.inet_ntop(socket.AF_INET6, packed)


def inet_pton(text: str) -> bytes:
    """The 16 bytes of an IPv6 address in text form."""
    return socket.inet_pton(socket.AF_INET6, text.strip())


def bin2long6(packed: bytes) -> int:
    """The unsigned integer of a 16-byte IPv6 address.

    >>> bin2long6(inet_pton('::1'))
    1
    """
    return int.from_bytes(packed, "big")


def addr2bin(text: str) -> int:
    """The unsigned integer of an IPv4 or IPv6 address; ``OSError`` if invalid.

    >>> addr2bin('1.2.3.4')
    16909060
    >>> addr2bin('::ffff:0')
    4294901760
    >>> addr2bin('1.2.3.256')
    Traceback (most recent call last):
      ...
    OSError: Invalid IP4 address: 1.2.3.256
    """
    family = "IP6" if ":" in text else "IP4"
    try:
        if family == "IP6":
            return bin2long6(inet_pton(text))
        return int(ipaddress.IPv4Address(text.strip()))
    except (OSError, ValueError):
        raise OSError(f"Invalid {family} address: {text}") from None


def cidr(i: int, n: int, mask: int = MASK) -> int:
    """``i`` with all but its first ``n`` bits cleared (``mask`` is the width).

    >>> hex(cidr(addr2bin('66.179.26.146'), 26))
    '0x42b31a80'
    """
    return i & (mask ^ (mask >> n))


def _literal(text: str) -> tuple[int, int, int] | None:
    """(family bits, value, mask) of an address literal, None if not one."""
    if ip4re.match(text):
        return 32, addr2bin(text), MASK
    if ip6re.match(text):
        return 128, bin2long6(inet_pton(text)), MASK6
    return None


def iniplist(ipaddr: str, iplist: Iterable[str]) -> bool:
    """Is ``ipaddr`` in one of ``iplist``'s entries?  An entry is an address,
    an address/prefix (CIDR), a host name (optionally with /prefix; its
    addresses are looked up) or a shell-style wildcard pattern.

    >>> iniplist('66.179.26.146', ['127.0.0.1', '66.179.26.128/26'])
    True
    >>> iniplist('127.0.0.1', ['127.0.0.1', '66.179.26.128/26'])
    True
    >>> iniplist('192.168.0.45', ['192.168.0.*'])
    True
    >>> iniplist('66.179.26.46', ['66.179.26.128/26'])
    False
    >>> iniplist('2001:610:779:0:223:6cff:fe9a:9cf3',
    ...          ['127.0.0.1', '172.20.1.0/24', '2001:610:779::/48'])
    True
    >>> iniplist('2G01:610:779:0:223:6cff:fe9a:9cf3', ['2001:610:779::/48'])
    Traceback (most recent call last):
      ...
    ValueError: Invalid ip syntax:2G01:610:779:0:223:6cff:fe9a:9cf3
    """
    mine = _literal(ipaddr)
    if mine is None:
        raise ValueError("Invalid ip syntax:" + ipaddr)
    bits, value, mask = mine
    family = socket.AF_INET if bits == 32 else socket.AF_INET6
    for pattern in iplist:
        base, _, prefix = pattern.partition("/")
        entry = _literal(base)
        if entry is not None:
            if entry[0] == bits:
                n = int(prefix) if prefix else bits
                if cidr(entry[1], n, mask) == cidr(value, n, mask):
                    return True
        elif dnsre.match(base):
            suffix = "/" + prefix if prefix else ""
            try:
                infos = socket.getaddrinfo(base, 25, family)
            except (OSError, UnicodeError):
                continue
            if iniplist(ipaddr, [str(info[4][0]) + suffix for info in infos]):
                return True
        elif fnmatchcase(ipaddr, pattern):
            return True
    return False


def _strip_route(addrspec: str) -> str:
    """``@hop1,@hop2:user@host`` without its source route."""
    colon = addrspec.rfind(":")
    return addrspec[colon + 1:] if colon > 0 else addrspec


def parseaddr(t: str) -> tuple[str, str]:
    """Split an address header value into (full name, address), like
    ``email.utils.parseaddr`` but also for unquoted names with specials
    and for source routes.

    >>> parseaddr('user@example.com')
    ('', 'user@example.com')
    >>> parseaddr('"Full Name" <foo@example.com>')
    ('Full Name', 'foo@example.com')
    >>> parseaddr('spam@spammer.com <foo@example.com>')
    ('spam@spammer.com', 'foo@example.com')
    >>> parseaddr('God@heaven <@hop1.org,@hop2.net:jeff@spec.org>')
    ('God@heaven', 'jeff@spec.org')
    >>> parseaddr('Real Name ((comment)) <addr...@example.com>')
    ('Real Name (comment)', 'addr...@example.com')
    """
    name, addr = email.utils.parseaddr(t)
    if name and addr:
        return name, addr
    lt = t.find("<")
    if lt <= 0 or not t.endswith(">"):
        return name, addr
    display, addrspec = t[:lt].strip(), _strip_route(t[lt + 1:-1])
    if not name:
        return email.utils.parseaddr(f'"{display}" <{addrspec}>')
    return email.utils.parseaddr(f"{display}<{addrspec}>")


def decode(s: str, convert_eols: str | None = None) -> bytes:
    """Base64-decode ``s``, adding the padding senders often leave off.

    >>> decode('aGk')
    b'hi'
    >>> decode('aGkKaGk', convert_eols='|')
    b'hi|hi'
    """
    if not s:
        return b""
    data = binascii.a2b_base64(s + "=" * (-len(s) % 4))
    if convert_eols:
        return data.replace(b"\n", convert_eols.encode())
    return data


def parse_addr(t: str) -> list[str]:
    """Split an address into [local part, domain] (just [local part] when
    it has no domain), unquoting a quoted local part and dropping angle
    brackets and a source route.

    >>> parse_addr('user@example.com')
    ['user', 'example.com']
    >>> parse_addr('"user@example.com"')
    ['user@example.com']
    >>> parse_addr('"user@bar"@example.com')
    ['user@bar', 'example.com']
    >>> parse_addr('foo')
    ['foo']
    >>> parse_addr('@mx.example.com:user@example.com')
    ['user', 'example.com']
    >>> parse_addr('@user@example.com')
    ['@user', 'example.com']
    """
    if t.startswith("<") and t.endswith(">"):
        t = t[1:-1]
    if t.startswith('"'):
        if t.endswith('"'):
            return [t[1:-1]]
        end = t.find('"@')
        if end > 0:
            return [t[1:end], t[end + 2:]]
    if t.startswith("@") and ":" in t:
        t = t.split(":", 1)[1]
    return t.rsplit("@", 1)


def parse_header(val: str) -> str:
    """The text of a header value with its RFC 2047 encoded words decoded;
    the raw value when nothing is encoded or it cannot be decoded.

    >>> parse_header('=?iso-8859-1?Q?Peter_=D8rum?= <orum@ditas.dk>')
    'Peter \\xd8rum <orum@ditas.dk>'
    >>> parse_header('plain text')
    'plain text'
    >>> parse_header('=?x-unknown?Q?abc?=')
    'abc'
    """
    try:
        parts = decode_header(val)
    except (email.errors.HeaderParseError, ValueError, LookupError):
        return val
    if not parts or (len(parts) == 1 and not parts[0][1]):
        return val
    text: list[str] = []
    for chunk, charset in parts:
        raw = chunk.encode("latin-1") if isinstance(chunk, str) else chunk
        try:
            text.append(raw.decode(charset or "ascii", "replace"))
        except LookupError:
            text.append(raw.decode("utf-8", "replace"))
    return "".join(text)
