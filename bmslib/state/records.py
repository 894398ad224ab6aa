"""What the state store shows to its administrator (``bms ban|whitelist|
blacklist|greylist``, :mod:`bmslib.cli`): one record of each kind, and the
filter that picks greylist triplets.  Both backends build these, so
listings look the same on SQLite and Redis."""

from __future__ import annotations

from dataclasses import dataclass

from ..policy.address import domain_parents
from ..policy.greylist import mask_ip

BAN_KINDS = ("ip", "domain")


def ban_keys(kind: str, name: str) -> list[str]:
    """The ban records that apply to ``name``, most specific first: an IP its
    own; a domain itself, then ``*.parent`` for each parent (``x.y`` bans
    exactly x.y, ``*.x.y`` every name below x.y)."""
    if kind == "ip":
        return [name]
    d = name.lower()
    return [d] + [f"*.{p}" for p in domain_parents(d)[1:]]


@dataclass(frozen=True)
class BanEntry:
    """A ban: ``kind`` ``ip`` or ``domain`` (``key`` a name or ``*.suffix``);
    ``until`` its expiry (``math.inf``: never)."""

    kind: str
    key: str
    until: float
    reason: str


@dataclass(frozen=True)
class ListEntry:
    """An auto-whitelist or blacklist entry (address or bare domain)."""

    kind: str
    entry: str
    until: float


@dataclass(frozen=True)
class GreylistEntry:
    """A greylist triplet as stored; ``count`` > 0 once a retry has passed."""

    origin: str
    sender: str
    recipient: str
    firstseen: float
    lastseen: float
    count: int

    @property
    def passed(self) -> bool:
        return self.count > 0


def _address_matches(pattern: str, address: str) -> bool:
    """``pattern`` is the address (any case), or ``@domain`` for its whole domain."""
    p, a = pattern.strip().lower(), address.lower()
    return a.endswith(p) if p.startswith("@") else a == p


@dataclass(frozen=True)
class GreylistMatch:
    """Which triplets a command acts on; an empty field matches everything.

    ``client`` is an IP (matched against the /24 or /64 origin it gives) or
    an SPF-pass domain; ``sender`` and ``recipient`` are addresses, or
    ``@domain`` for every address of a domain."""

    sender: str = ""
    recipient: str = ""
    client: str = ""

    @property
    def everything(self) -> bool:
        return not (self.sender or self.recipient or self.client)

    def matches(self, record: GreylistEntry) -> bool:
        if self.sender and not _address_matches(self.sender, record.sender):
            return False
        if self.recipient and not _address_matches(self.recipient, record.recipient):
            return False
        if self.client:
            origin = record.origin.lower()
            return origin in (self.client.strip().lower(), mask_ip(self.client))
        return True
