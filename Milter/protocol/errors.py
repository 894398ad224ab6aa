"""Protocol errors, split by who is to blame.

``PeerError``: the MTA sent something the protocol does not allow; the session
ends (PROTOCOL.md §9).  ``UsageError``: the milter application asked for
something the negotiated session does not allow (an edit outside end of
message, an action that was not negotiated, a malformed reply text); the
session goes on and the caller gets an exception.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base class of every error raised by :mod:`Milter.protocol`."""


class PeerError(ProtocolError):
    """The MTA broke the protocol; the session cannot continue."""


class MalformedPacket(PeerError):
    """A packet whose payload does not parse."""


class OversizedPacket(PeerError):
    """A packet longer than the configured limit."""


class UnknownCommand(PeerError):
    """A command byte that is not in the protocol."""


class TruncatedStream(PeerError):
    """End of stream inside a packet."""


class NegotiationRefused(PeerError):
    """Option negotiation failed (bad offer, or a request the MTA cannot meet)."""


class UsageError(ProtocolError):
    """The application asked for something the session does not allow."""


class ActionNotAllowed(UsageError):
    """A modification outside end of message, or one that was not negotiated."""


class InvalidReply(UsageError):
    """A reply code or text that the MTA would reject."""
