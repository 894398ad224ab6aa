"""The outside world as the policy sees it: small ``typing.Protocol``
interfaces, implemented by adapters wired in ``bms.py`` and by fakes in
tests (ARCHITECTURE.md, style rule 10).  Nothing here does I/O itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Protocol

from .policy.decision import AccessValue
from .policy.greylist import GreylistKey, GreylistSettings, GreylistVerdict

if TYPE_CHECKING:  # bmslib.state imports this module
    from .state.records import BanEntry, GreylistEntry, GreylistMatch, ListEntry


class DnsTempError(Exception):
    """The DNS answer is unknown right now (timeout, SERVFAIL): try later."""


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (``time.time()``)."""
        ...


class Resolver(Protocol):
    """DNS lookups through the configured servers (``bmslib.dns``).

    A name that does not exist, or has no record of the type, gives ``[]``;
    an unknown answer raises :class:`DnsTempError`."""

    def addresses(self, name: str) -> list[str]:
        """A and AAAA records, as IP address text."""
        ...

    def ptr(self, ip: str) -> list[str]:
        """PTR names of an IPv4 or IPv6 address, without the trailing dot."""
        ...

    def mx(self, domain: str) -> list[tuple[int, str]]:
        """MX records as ``(preference, host)``, sorted by preference."""
        ...

    def txt(self, name: str) -> list[bytes]:
        """TXT records, each with its strings joined."""
        ...


class Access(Protocol):
    """The sendmail access file (``bmslib.access``)."""

    def lookup(self, tag: str, subject: str) -> AccessValue | None:
        """The value for ``Tag:subject`` with sendmail's lookup order (SPEC §5):
        full address, ``user@``, the domain and its parents, then ``Tag:``."""
        ...


class BanStore(Protocol):
    """Banned IPs and domains with expiry (the state store)."""

    def ban_ip(self, ip: str, until: float, reason: str) -> None: ...

    def ip_banned(self, ip: str, now: float) -> bool: ...

    def ban_domain(self, domain: str, until: float, reason: str) -> None: ...

    def domain_banned(self, domain: str, now: float) -> bool: ...

    def ban_in_force(self, kind: str, name: str, now: float) -> BanEntry | None:
        """The unexpired ban that refuses IP (``kind`` ``ip``) or domain ``name``,
        the most specific one (for the log line that acts on it), or None."""
        ...


class AddressLists(Protocol):
    """The auto-whitelist and the blacklist (the state store; ``bmslib.state.lists``).

    ``kind`` is ``"whitelist"`` or ``"blacklist"`` (anything else: ValueError).
    An entry is a full address or a bare domain, stored lowercased."""

    def list_add(self, kind: str, entry: str, until: float) -> None:
        """Add ``entry`` until ``until`` (``math.inf``: a manual entry that never
        expires); re-adding keeps the later expiry; an empty entry is ignored."""
        ...

    def listed(self, kind: str, address: str, now: float) -> bool:
        """The address (case-insensitive) or its domain (after the last ``@``) has an
        unexpired entry.  A bare domain matches only itself, not its parents."""
        ...

    def list_remove(self, kind: str, entry: str) -> None:
        """Remove ``entry`` (nothing happens when it is not there)."""
        ...


@dataclass(frozen=True)
class SenderStanding:
    """What the store says of a MAIL FROM, in one read: its domain is banned,
    the address (or its domain) is on the blacklist, on the auto-whitelist,
    the client's IP is banned."""

    banned: bool = False
    blacklisted: bool = False
    whitelisted: bool = False
    ip_banned: bool = False


NOT_LISTED = SenderStanding()  # also the answer of a store that is down


class SenderLookup(Protocol):
    """The reads of a MAIL FROM as one (the state store)."""

    def standing(self, domain: str | None, address: str | None, ip: str | None,
                 now: float) -> SenderStanding:
        """``domain_banned(domain)``, ``listed`` of ``address`` on the blacklist
        and the whitelist, ``ip_banned(ip)`` (each False when not given): the
        same answers, in one read of the store."""
        ...


class ReportCounters(Protocol):
    """DMARC aggregate-report data (the state store; ``bmslib.policy.dmarcreport``):
    counters per UTC day (days since the epoch) and opaque row key, kept
    :data:`REPORT_DAYS` days."""

    def report_count(self, day: int, key: str, count: int = 1) -> None:
        """Add ``count`` to counter ``key`` of ``day``."""
        ...

    def report_counts(self, first_day: int, last_day: int) -> list[tuple[int, str, int]]:
        """``(day, key, count)`` of every counter of those days (inclusive), sorted."""
        ...


class ReportSink(Protocol):
    """Where the policy counts a message's report row (``bmslib.state.reportbuffer``)."""

    def count(self, day: int, key: str) -> None:
        """Add 1 to counter ``key`` of ``day``."""
        ...


REPORT_DAYS = 62  # days aggregate-report counters are kept


class StateStore(BanStore, AddressLists, SenderLookup, ReportCounters, Protocol):
    """Everything the state store offers (SPEC §6): SQLite
    (``bmslib.state.sqlite``) or Redis (``bmslib.state.redis``), the same
    semantics, checked by one contract test suite.

    Times are seconds since the epoch, passed in by the caller; an expiry of
    ``math.inf`` never expires.  A backend that cannot answer raises
    ``bmslib.policy.greylist.StoreUnavailable`` (Redis) or ``sqlite3.Error``.
    Text may carry 8-bit bytes as surrogate escapes."""

    path: str
    """Where the state lives, for logs (a Redis URL without its password)."""

    def purge(self, now: float) -> int:
        """Delete expired bans, cache and list entries; the number removed
        (0 for a backend whose records expire by themselves)."""
        ...

    def cache_get(self, kind: str, key: str, now: float) -> str | None:
        """The unexpired value cached under ``(kind, key)``, or None."""
        ...

    def cache_put(self, kind: str, key: str, value: str, until: float) -> None:
        """Cache ``value`` until ``until``, replacing what was there."""
        ...

    def reserve(self, name: str, count: int) -> int:
        """Reserve ``count`` consecutive numbers (from 1) of counter ``name``; the
        first.  Never handed out twice, across processes, hosts and restarts."""
        ...

    def greylist(self, key: GreylistKey, now: float,
                 settings: GreylistSettings) -> GreylistVerdict:
        """One attempt of the triplet ``key``, atomically (``greylist_step``)."""
        ...

    def purge_greylist(self, now: float, settings: GreylistSettings) -> int:
        """Delete greylist records the next attempt would start afresh; the number
        removed (0 for a backend whose records expire by themselves)."""
        ...

    def close(self) -> None:
        """Close the connection (SQLite: this thread's; it reopens when used again)."""
        ...


class StoreAdmin(Protocol):
    """What the admin commands (``bms ban|whitelist|blacklist|greylist``,
    :mod:`bmslib.cli`) need beyond :class:`StateStore`: list and delete.
    Listings are sorted; expired records are never shown."""

    def bans(self, now: float) -> list[BanEntry]:
        """Every unexpired IP and domain ban."""
        ...

    def unban(self, kind: str, key: str) -> bool:
        """Delete the ban ``kind`` (``ip`` or ``domain``) ``key``; whether it was there."""
        ...

    def list_entries(self, kind: str, now: float) -> list[ListEntry]:
        """Every unexpired entry of address list ``kind``."""
        ...

    def greylist_entries(self, match: GreylistMatch) -> list[GreylistEntry]:
        """The greylist triplets ``match`` selects."""
        ...

    def greylist_pass(self, match: GreylistMatch, now: float,
                      settings: GreylistSettings) -> int:
        """Let the next attempt of the selected triplets pass (one still waiting
        counts as first seen ``time`` ago, so a retry within ``expire`` passes
        and is logged as its first pass); all count as seen ``now``; how many."""
        ...

    def greylist_forget(self, match: GreylistMatch) -> int:
        """Delete the selected triplets (the next attempt starts afresh); how many."""
        ...


class AdminStore(StateStore, StoreAdmin, Protocol):
    """A state store the admin commands can drive (both backends are)."""


class Archive(Protocol):
    """The mail archive (``bmslib.archive``): mbox or maildir."""

    def append(self, sender: str, headers: Sequence[tuple[str, str]], body: IO[bytes],
               when: float) -> str:
        """Store one message (body read from its start); where it went.
        Raises ``ArchiveError`` (one line) when it cannot."""
        ...
