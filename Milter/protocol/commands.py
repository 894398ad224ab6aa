"""Commands the MTA sends (PROTOCOL.md §3): typed, immutable, parsed by functions.

Strings stay ``bytes`` here; decoding is the API layer's business (§9: the
wire carries arbitrary 8-bit data).  Every command can also ``encode()``
itself, which the tests, the benchmark driver and ``TestCtx`` use to play MTA.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from . import constants as C
from .errors import MalformedPacket, NegotiationRefused, UnknownCommand, shown
from .framing import encode_frame

_U32X3: Final = struct.Struct(">III")
_U16: Final = struct.Struct(">H")
# sockaddr_un.sun_path on Linux; libmilter refuses longer paths.
_SUN_PATH_MAX: Final = 108


def _cstr(data: bytes) -> bytes:
    return data + b"\0"


def split_cstrings(data: bytes) -> tuple[bytes, ...]:
    """``cstr[]``: strings up to each NUL; bytes after the last NUL are dropped."""
    parts = data.split(b"\0")
    return tuple(parts[:-1])


def first_cstring(data: bytes) -> bytes:
    """Up to the first NUL, or everything when there is none."""
    end = data.find(b"\0")
    return data if end < 0 else data[:end]


@dataclass(frozen=True, slots=True)
class OptNeg:
    version: int
    actions: int
    protocol: int

    def encode(self) -> bytes:
        return encode_frame(C.SMFIC_OPTNEG, _U32X3.pack(self.version, self.actions, self.protocol))


@dataclass(frozen=True, slots=True)
class Macro:
    """Macro definitions for the command ``stage`` (a command byte, e.g. ``ord('C')``).

    ``pairs`` keeps the wire order; a trailing name without a value gets ``None``.
    """

    stage: int
    pairs: tuple[tuple[bytes, bytes | None], ...]

    def encode(self) -> bytes:
        body = bytearray((self.stage,))
        for name, value in self.pairs:
            body += _cstr(name)
            if value is not None:
                body += _cstr(value)
        return encode_frame(C.SMFIC_MACRO, bytes(body))


@dataclass(frozen=True, slots=True)
class Connect:
    """``family`` is one of ``SMFIA_*``; ``address`` is the canonical IP text
    (no ``IPv6:`` prefix), the socket path, or ``None`` for an unknown family."""

    hostname: bytes
    family: int
    port: int = 0
    address: str | None = None

    def encode(self) -> bytes:
        body = _cstr(self.hostname) + bytes((self.family,))
        if self.family != C.SMFIA_UNKNOWN:
            address = (self.address or "").encode("utf-8", "surrogateescape")
            body += _U16.pack(self.port) + _cstr(address)
        return encode_frame(C.SMFIC_CONNECT, body)


@dataclass(frozen=True, slots=True)
class Helo:
    name: bytes

    def encode(self) -> bytes:
        return encode_frame(C.SMFIC_HELO, _cstr(self.name))


@dataclass(frozen=True, slots=True)
class Mail:
    """``args[0]`` is the sender as given, with its angle brackets; then ESMTP params."""

    args: tuple[bytes, ...]

    def encode(self) -> bytes:
        return encode_frame(C.SMFIC_MAIL, b"".join(_cstr(a) for a in self.args))


@dataclass(frozen=True, slots=True)
class Rcpt:
    args: tuple[bytes, ...]

    def encode(self) -> bytes:
        return encode_frame(C.SMFIC_RCPT, b"".join(_cstr(a) for a in self.args))


@dataclass(frozen=True, slots=True)
class Data:
    def encode(self) -> bytes:
        return encode_frame(C.SMFIC_DATA)


@dataclass(frozen=True, slots=True)
class Header:
    name: bytes
    value: bytes

    def encode(self) -> bytes:
        return encode_frame(C.SMFIC_HEADER, _cstr(self.name) + _cstr(self.value))


@dataclass(frozen=True, slots=True)
class EndOfHeaders:
    def encode(self) -> bytes:
        return encode_frame(C.SMFIC_EOH)


@dataclass(frozen=True, slots=True)
class Body:
    chunk: bytes

    def encode(self) -> bytes:
        return encode_frame(C.SMFIC_BODY, self.chunk)


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    """BODYEOB; libmilter treats any data on it as a final body chunk (§3.4)."""

    chunk: bytes = b""

    def encode(self) -> bytes:
        return encode_frame(C.SMFIC_BODYEOB, self.chunk)


@dataclass(frozen=True, slots=True)
class Abort:
    def encode(self) -> bytes:
        return encode_frame(C.SMFIC_ABORT)


@dataclass(frozen=True, slots=True)
class Quit:
    def encode(self) -> bytes:
        return encode_frame(C.SMFIC_QUIT)


@dataclass(frozen=True, slots=True)
class QuitNewConnection:
    def encode(self) -> bytes:
        return encode_frame(C.SMFIC_QUIT_NC)


@dataclass(frozen=True, slots=True)
class Unknown:
    line: bytes

    def encode(self) -> bytes:
        return encode_frame(C.SMFIC_UNKNOWN, _cstr(self.line))


Command = (
    OptNeg | Macro | Connect | Helo | Mail | Rcpt | Data | Header | EndOfHeaders | Body
    | EndOfMessage | Abort | Quit | QuitNewConnection | Unknown
)


# --- parsing -------------------------------------------------------------------

def _need_data(name: str, payload: bytes) -> None:
    # libmilter: a CM_BUF command that arrives without data ends the session.
    if not payload:
        raise MalformedPacket(f"{name} without data")


def parse_optneg(payload: bytes) -> OptNeg:
    if len(payload) < C.MILTER_OPTLEN:
        raise NegotiationRefused(f"OPTNEG of {len(payload)} bytes, need {C.MILTER_OPTLEN}")
    version, actions, protocol = _U32X3.unpack_from(payload)
    if version < C.SMFI_PROT_VERSION_MIN:
        raise NegotiationRefused(f"MTA protocol version {version} is older than 2")
    return OptNeg(version, actions, protocol)


def parse_macro(payload: bytes) -> Macro:
    _need_data("MACRO", payload)
    strings = split_cstrings(payload[1:])
    pairs = []
    for i in range(0, len(strings), 2):
        name = strings[i]
        value = strings[i + 1] if i + 1 < len(strings) else None
        pairs.append((name, value))
    return Macro(payload[0], tuple(pairs))


def _parse_ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise MalformedPacket(f"CONNECT with a bad IPv4 address {shown(text)}") from None


def _parse_ipv6(text: str) -> str:
    # Sendmail prefixes "IPv6:"; libmilter strips it case-insensitively.
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    if "%" in text:  # inet_pton takes no scope id
        raise MalformedPacket(f"CONNECT with a bad IPv6 address {shown(text)}")
    try:
        addr = ipaddress.IPv6Address(text)
    except ValueError:
        raise MalformedPacket(f"CONNECT with a bad IPv6 address {shown(text)}") from None
    return _inet_ntop6(addr)


def _inet_ntop6(addr: ipaddress.IPv6Address) -> str:
    """The text glibc's ``inet_ntop`` gives (§3.1: pymilter's ``hostaddr`` is
    the address after inet_pton/inet_ntop).  Python before 3.13 writes
    ``::ffff:1.2.3.4`` as ``::ffff:102:304``; glibc keeps the dotted quad for
    v4-mapped addresses and for ``::a.b.c.d`` with a non-zero seventh word."""
    packed = addr.packed
    if packed[:10] == bytes(10) and packed[10:12] == b"\xff\xff":
        return "::ffff:" + str(ipaddress.IPv4Address(packed[12:]))
    if packed[:12] == bytes(12) and packed[12:14] != bytes(2):
        return "::" + str(ipaddress.IPv4Address(packed[12:]))
    return str(addr)


def parse_connect(payload: bytes) -> Connect:
    _need_data("CONNECT", payload)
    nul = payload.find(b"\0")
    if nul < 0 or nul + 1 >= len(payload):
        raise MalformedPacket("CONNECT without hostname terminator or family")
    hostname = payload[:nul]
    family = payload[nul + 1]
    if family == C.SMFIA_UNKNOWN:
        return Connect(hostname, family)
    rest = payload[nul + 2 :]
    if len(rest) < 3 or rest[-1] != 0:
        raise MalformedPacket("CONNECT address is missing or not NUL-terminated")
    (port,) = _U16.unpack_from(rest)
    raw = first_cstring(rest[2:])
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        if family != C.SMFIA_UNIX:
            raise MalformedPacket("CONNECT address is not ASCII") from None
        text = raw.decode("utf-8", "surrogateescape")
    if family == C.SMFIA_INET:
        return Connect(hostname, family, port, _parse_ipv4(text))
    if family == C.SMFIA_INET6:
        return Connect(hostname, family, port, _parse_ipv6(text))
    if family == C.SMFIA_UNIX:
        if len(raw) >= _SUN_PATH_MAX:
            raise MalformedPacket("CONNECT socket path too long")
        return Connect(hostname, family, port, text)
    raise MalformedPacket(f"CONNECT with unknown family {family:#04x}")


def parse_helo(payload: bytes) -> Helo:
    _need_data("HELO", payload)
    # libmilter leaves the MTA hanging on a HELO without NUL; we take what is there.
    return Helo(first_cstring(payload))


def _parse_args(name: str, payload: bytes) -> tuple[bytes, ...]:
    _need_data(name, payload)
    args = split_cstrings(payload)
    if not args:
        raise MalformedPacket(f"{name} without any NUL-terminated argument")
    return args


def parse_mail(payload: bytes) -> Mail:
    return Mail(_parse_args("MAIL", payload))


def parse_rcpt(payload: bytes) -> Rcpt:
    return Rcpt(_parse_args("RCPT", payload))


def parse_header(payload: bytes) -> Header:
    _need_data("HEADER", payload)
    if payload[-1] != 0:
        raise MalformedPacket("HEADER not NUL-terminated")
    nul = payload.find(b"\0")
    if nul <= 0 or nul >= len(payload) - 1:
        raise MalformedPacket("HEADER without name or value")
    return Header(payload[:nul], first_cstring(payload[nul + 1 :]))


def parse_unknown(payload: bytes) -> Unknown:
    _need_data("UNKNOWN", payload)
    return Unknown(first_cstring(payload))


_DATA: Final = Data()
_EOH: Final = EndOfHeaders()
_ABORT: Final = Abort()
_QUIT: Final = Quit()
_QUIT_NC: Final = QuitNewConnection()

PARSERS: Final[dict[int, Callable[[bytes], Command]]] = {
    C.SMFIC_OPTNEG: parse_optneg,
    C.SMFIC_MACRO: parse_macro,
    C.SMFIC_CONNECT: parse_connect,
    C.SMFIC_HELO: parse_helo,
    C.SMFIC_MAIL: parse_mail,
    C.SMFIC_RCPT: parse_rcpt,
    C.SMFIC_DATA: lambda _p: _DATA,
    C.SMFIC_HEADER: parse_header,
    C.SMFIC_EOH: lambda _p: _EOH,
    C.SMFIC_BODY: Body,  # an empty chunk is tolerated (§6.2, "harmless improvement")
    C.SMFIC_BODYEOB: EndOfMessage,
    C.SMFIC_ABORT: lambda _p: _ABORT,
    C.SMFIC_QUIT: lambda _p: _QUIT,
    C.SMFIC_QUIT_NC: lambda _p: _QUIT_NC,
    C.SMFIC_UNKNOWN: parse_unknown,
}


def parse_command(code: int, payload: bytes) -> Command:
    """Parse one frame into a command; raises a :class:`PeerError` on garbage."""
    parser = PARSERS.get(code)
    if parser is None:
        raise UnknownCommand(f"unknown command byte {code:#04x}")
    return parser(payload)
