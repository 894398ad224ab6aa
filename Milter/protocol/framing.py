"""Packet framing: ``uint32 len | char cmd | data[len-1]`` (PROTOCOL.md §2).

:class:`FrameDecoder` is incremental: feed it whatever one ``recv`` returned,
then take complete frames out.  It never holds more than one packet beyond the
size limit, and refuses a length field above that limit before reading the
data, so a hostile length cannot make us buffer gigabytes.
"""

from __future__ import annotations

import struct
from typing import Final

from .constants import DEFAULT_MAX_DATA_SIZE
from .errors import MalformedPacket, OversizedPacket, TruncatedStream

_LEN: Final = struct.Struct(">I")
_HEADER_SIZE: Final = 4


def encode_frame(code: int, payload: bytes = b"") -> bytes:
    """One packet: the length counts the command byte plus the payload."""
    return _LEN.pack(len(payload) + 1) + bytes((code,)) + payload


class FrameDecoder:
    """Splits a byte stream into ``(command, payload)`` frames."""

    __slots__ = ("_buf", "_pos", "max_data_size")

    def __init__(self, max_data_size: int = DEFAULT_MAX_DATA_SIZE) -> None:
        # ``bytes`` while each feed() holds whole packets (frames are sliced
        # straight out of it), a ``bytearray`` while a packet is incomplete.
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self.max_data_size = max_data_size

    def feed(self, data: bytes) -> None:
        buf = self._buf
        if self._pos >= len(buf):
            self._buf = data
        elif isinstance(buf, bytearray):
            del buf[: self._pos]  # drop what was consumed, then grow
            buf += data
        else:
            self._buf = bytearray(buf[self._pos :]) + data
        self._pos = 0

    def next_frame(self) -> tuple[int, bytes] | None:
        """The next complete frame, or ``None`` when more bytes are needed.

        Raises :class:`OversizedPacket` or :class:`MalformedPacket` as soon as
        the length field is known to be bad.
        """
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        if avail < _HEADER_SIZE:
            return None
        (length,) = _LEN.unpack_from(buf, pos)
        if length == 0:
            # No command byte at all; libmilter would misread the stream.
            raise MalformedPacket("packet of length 0")
        if length - 1 > self.max_data_size:
            raise OversizedPacket(
                f"packet data of {length - 1} bytes exceeds the limit of {self.max_data_size}"
            )
        end = pos + _HEADER_SIZE + length
        if len(buf) < end:
            return None
        code = buf[pos + _HEADER_SIZE]
        payload = buf[pos + _HEADER_SIZE + 1 : end]
        if end == len(buf):
            self._buf = b""
            self._pos = 0
        else:
            self._pos = end
        return code, payload if type(payload) is bytes else bytes(payload)

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a frame."""
        return len(self._buf) - self._pos

    def check_eof(self) -> None:
        """Call at end of stream: raises if it ended inside a packet."""
        if self.buffered:
            raise TruncatedStream(f"stream ended inside a packet ({self.buffered} bytes pending)")
