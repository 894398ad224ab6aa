"""What the milter sends (PROTOCOL.md §4, §5.2): verdicts, edits, OPTNEG reply.

Verdicts end the MTA's wait for one command; modifications are only legal
while end-of-message is being answered.  Both kinds ``encode()`` to one
complete packet.  :func:`parse_reply` is the MTA side of the same codec, used
by tests, ``TestCtx`` and the benchmark driver.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Final

from . import constants as C
from .commands import first_cstring, split_cstrings
from .errors import MalformedPacket
from .framing import encode_frame

_U32: Final = struct.Struct(">I")
_U32X3: Final = struct.Struct(">III")


def _cstr(data: bytes) -> bytes:
    return data + b"\0"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A reply without data: ``c a r t d s p 4``."""

    code: int

    def encode(self) -> bytes:
        return encode_frame(self.code)


CONTINUE: Final = Verdict(C.SMFIR_CONTINUE)
ACCEPT: Final = Verdict(C.SMFIR_ACCEPT)
REJECT: Final = Verdict(C.SMFIR_REJECT)
TEMPFAIL: Final = Verdict(C.SMFIR_TEMPFAIL)
DISCARD: Final = Verdict(C.SMFIR_DISCARD)
SKIP: Final = Verdict(C.SMFIR_SKIP)
PROGRESS: Final = Verdict(C.SMFIR_PROGRESS)
SHUTDOWN: Final = Verdict(C.SMFIR_SHUTDOWN)


@dataclass(frozen=True, slots=True)
class ReplyCode:
    """``y``: a complete SMTP reply, possibly multi-line (§4.2)."""

    text: bytes

    code: ClassVar[int] = C.SMFIR_REPLYCODE

    def encode(self) -> bytes:
        return encode_frame(C.SMFIR_REPLYCODE, _cstr(self.text))


@dataclass(frozen=True, slots=True)
class OptNegReply:
    version: int
    actions: int
    protocol: int
    symlists: tuple[tuple[int, bytes], ...] = ()

    code: ClassVar[int] = C.SMFIR_OPTNEG

    def encode(self) -> bytes:
        body = _U32X3.pack(self.version, self.actions, self.protocol)
        for stage, names in self.symlists:
            body += _U32.pack(stage) + _cstr(names)
        return encode_frame(C.SMFIR_OPTNEG, body)


@dataclass(frozen=True, slots=True)
class AddHeader:
    name: bytes
    value: bytes
    action: ClassVar[int] = C.SMFIF_ADDHDRS

    code: ClassVar[int] = C.SMFIR_ADDHEADER

    def encode(self) -> bytes:
        return encode_frame(C.SMFIR_ADDHEADER, _cstr(self.name) + _cstr(self.value))


@dataclass(frozen=True, slots=True)
class InsertHeader:
    index: int
    name: bytes
    value: bytes
    action: ClassVar[int] = C.SMFIF_ADDHDRS

    code: ClassVar[int] = C.SMFIR_INSHEADER

    def encode(self) -> bytes:
        return encode_frame(
            C.SMFIR_INSHEADER, _U32.pack(self.index) + _cstr(self.name) + _cstr(self.value)
        )


@dataclass(frozen=True, slots=True)
class ChangeHeader:
    """1-based occurrence ``index`` of ``name``; an empty value deletes it."""

    index: int
    name: bytes
    value: bytes
    action: ClassVar[int] = C.SMFIF_CHGHDRS

    code: ClassVar[int] = C.SMFIR_CHGHEADER

    def encode(self) -> bytes:
        return encode_frame(
            C.SMFIR_CHGHEADER, _U32.pack(self.index) + _cstr(self.name) + _cstr(self.value)
        )


@dataclass(frozen=True, slots=True)
class AddRcpt:
    rcpt: bytes
    action: ClassVar[int] = C.SMFIF_ADDRCPT

    code: ClassVar[int] = C.SMFIR_ADDRCPT

    def encode(self) -> bytes:
        return encode_frame(C.SMFIR_ADDRCPT, _cstr(self.rcpt))


@dataclass(frozen=True, slots=True)
class AddRcptPar:
    """ESMTP ``args`` travel as one space-separated string."""

    rcpt: bytes
    args: bytes | None = None
    action: ClassVar[int] = C.SMFIF_ADDRCPT_PAR

    code: ClassVar[int] = C.SMFIR_ADDRCPT_PAR

    def encode(self) -> bytes:
        body = _cstr(self.rcpt)
        if self.args is not None:
            body += _cstr(self.args)
        return encode_frame(C.SMFIR_ADDRCPT_PAR, body)


@dataclass(frozen=True, slots=True)
class DelRcpt:
    rcpt: bytes
    action: ClassVar[int] = C.SMFIF_DELRCPT

    code: ClassVar[int] = C.SMFIR_DELRCPT

    def encode(self) -> bytes:
        return encode_frame(C.SMFIR_DELRCPT, _cstr(self.rcpt))


@dataclass(frozen=True, slots=True)
class ChangeFrom:
    sender: bytes
    args: bytes | None = None
    action: ClassVar[int] = C.SMFIF_CHGFROM

    code: ClassVar[int] = C.SMFIR_CHGFROM

    def encode(self) -> bytes:
        body = _cstr(self.sender)
        if self.args is not None:
            body += _cstr(self.args)
        return encode_frame(C.SMFIR_CHGFROM, body)


@dataclass(frozen=True, slots=True)
class ReplaceBody:
    """One ``b`` packet (at most 65535 bytes; see :func:`replace_body_packets`)."""

    chunk: bytes
    action: ClassVar[int] = C.SMFIF_CHGBODY

    code: ClassVar[int] = C.SMFIR_REPLBODY

    def encode(self) -> bytes:
        return encode_frame(C.SMFIR_REPLBODY, self.chunk)


@dataclass(frozen=True, slots=True)
class Quarantine:
    reason: bytes
    action: ClassVar[int] = C.SMFIF_QUARANTINE

    code: ClassVar[int] = C.SMFIR_QUARANTINE

    def encode(self) -> bytes:
        return encode_frame(C.SMFIR_QUARANTINE, _cstr(self.reason))


Modification = (
    AddHeader | InsertHeader | ChangeHeader | AddRcpt | AddRcptPar | DelRcpt | ChangeFrom
    | ReplaceBody | Quarantine
)
Reply = Verdict | ReplyCode | OptNegReply | Modification

FINAL_CODES: Final = frozenset(
    (C.SMFIR_CONTINUE, C.SMFIR_ACCEPT, C.SMFIR_REJECT, C.SMFIR_TEMPFAIL, C.SMFIR_DISCARD,
     C.SMFIR_REPLYCODE, C.SMFIR_SKIP, C.SMFIR_SHUTDOWN)
)


def replace_body_packets(body: bytes) -> list[bytes]:
    """``b`` packets for ``body``, split at 65535 bytes; empty body -> one empty packet."""
    if not body:
        return [encode_frame(C.SMFIR_REPLBODY)]
    step = C.MILTER_CHUNK_SIZE
    return [encode_frame(C.SMFIR_REPLBODY, body[i : i + step]) for i in range(0, len(body), step)]


# --- MTA side: decoding what a milter sent -----------------------------------------

def _two(payload: bytes, name: str) -> tuple[bytes, bytes | None]:
    strings = split_cstrings(payload)
    if not strings:
        raise MalformedPacket(f"{name} without a NUL-terminated string")
    return strings[0], (strings[1] if len(strings) > 1 else None)


def _indexed(payload: bytes, name: str) -> tuple[int, bytes, bytes]:
    if len(payload) < 6:
        raise MalformedPacket(f"{name} too short")
    (index,) = _U32.unpack_from(payload)
    strings = split_cstrings(payload[4:])
    if len(strings) < 2:
        raise MalformedPacket(f"{name} needs a name and a value")
    return index, strings[0], strings[1]


def parse_optneg_reply(payload: bytes) -> OptNegReply:
    if len(payload) < C.MILTER_OPTLEN:
        raise MalformedPacket("OPTNEG reply shorter than 12 bytes")
    version, actions, protocol = _U32X3.unpack_from(payload)
    symlists = []
    pos = C.MILTER_OPTLEN
    while pos + 4 < len(payload):
        (stage,) = _U32.unpack_from(payload, pos)
        end = payload.find(b"\0", pos + 4)
        if end < 0:
            raise MalformedPacket("symbol list not NUL-terminated")
        symlists.append((stage, payload[pos + 4 : end]))
        pos = end + 1
    return OptNegReply(version, actions, protocol, tuple(symlists))


def parse_reply(code: int, payload: bytes) -> Reply:
    """Decode one packet sent by a milter (the MTA's view)."""
    if code in (C.SMFIR_CONTINUE, C.SMFIR_ACCEPT, C.SMFIR_REJECT, C.SMFIR_TEMPFAIL,
                C.SMFIR_DISCARD, C.SMFIR_SKIP, C.SMFIR_PROGRESS, C.SMFIR_SHUTDOWN):
        if payload:
            raise MalformedPacket(f"reply {chr(code)!r} followed by {len(payload)} data bytes")
        return Verdict(code)
    if code == C.SMFIR_REPLYCODE:
        if not payload or payload[-1] != 0:
            raise MalformedPacket("REPLYCODE not NUL-terminated")
        return ReplyCode(first_cstring(payload))
    if code == C.SMFIR_OPTNEG:
        return parse_optneg_reply(payload)
    if code == C.SMFIR_ADDHEADER:
        name, value = _two(payload, "ADDHEADER")
        return AddHeader(name, value or b"")
    if code == C.SMFIR_INSHEADER:
        return InsertHeader(*_indexed(payload, "INSHEADER"))
    if code == C.SMFIR_CHGHEADER:
        return ChangeHeader(*_indexed(payload, "CHGHEADER"))
    if code == C.SMFIR_ADDRCPT:
        return AddRcpt(_two(payload, "ADDRCPT")[0])
    if code == C.SMFIR_ADDRCPT_PAR:
        return AddRcptPar(*_two(payload, "ADDRCPT_PAR"))
    if code == C.SMFIR_DELRCPT:
        return DelRcpt(_two(payload, "DELRCPT")[0])
    if code == C.SMFIR_CHGFROM:
        return ChangeFrom(*_two(payload, "CHGFROM"))
    if code == C.SMFIR_REPLBODY:
        return ReplaceBody(payload)
    if code == C.SMFIR_QUARANTINE:
        return Quarantine(_two(payload, "QUARANTINE")[0])
    raise MalformedPacket(f"unknown reply code {code:#04x}")
