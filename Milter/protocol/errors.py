"""Protocol errors, split by who is to blame.

``PeerError``: the MTA sent something the protocol does not allow; the session
ends (PROTOCOL.md §9).  ``UsageError``: the milter application asked for
something the negotiated session does not allow (an edit outside end of
message, an action that was not negotiated, a malformed reply text); the
session goes on and the caller gets an exception.
"""

from __future__ import annotations

SHOWN_LIMIT = 80  # characters of a bad field quoted in an error message


def shown(text: str | bytes, limit: int = SHOWN_LIMIT) -> str:
    """A bad field as an error message quotes it: ``repr`` (so control
    characters are escaped), at most ``limit`` characters of it, then how many
    more there were.  A hostile packet can carry a field of a megabyte."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}...({len(text) - limit} more)"


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
