"""Sans-I/O milter protocol (PROTOCOL.md): framing, commands, replies,
negotiation and the libmilter session state machine.  Standard library only;
no sockets, threads, clocks or logging configuration."""

from . import constants
from .commands import Command, parse_command
from .errors import (
    ActionNotAllowed,
    InvalidReply,
    MalformedPacket,
    NegotiationRefused,
    OversizedPacket,
    PeerError,
    ProtocolError,
    TruncatedStream,
    UnknownCommand,
    UsageError,
)
from .framing import FrameDecoder, encode_frame
from .negotiation import Agreement, Offer, settle
from .replies import Reply, parse_reply
from .session import Session, State

__all__ = [
    "ActionNotAllowed", "Agreement", "Command", "FrameDecoder", "InvalidReply",
    "MalformedPacket", "NegotiationRefused", "Offer", "OversizedPacket", "PeerError",
    "ProtocolError", "Reply", "Session", "State", "TruncatedStream", "UnknownCommand",
    "UsageError", "constants", "encode_frame", "parse_command", "parse_reply", "settle",
]
