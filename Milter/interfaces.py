"""The outside world as the policy sees it: small ``typing.Protocol``
interfaces, implemented by adapters wired in ``bms.py`` and by fakes in
tests (ARCHITECTURE.md, style rule 10).  Nothing here does I/O itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO, Protocol

from .policy.decision import AccessValue


class DnsTempError(Exception):
    """The DNS answer is unknown right now (timeout, SERVFAIL): try later."""


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (``time.time()``)."""
        ...


class Resolver(Protocol):
    """DNS lookups through the configured servers (``Milter.dns``).

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
    """The sendmail access file (``Milter.access``)."""

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


class Archive(Protocol):
    """The mail archive (``Milter.archive``): mbox or maildir."""

    def append(self, sender: str, headers: Sequence[tuple[str, str]], body: IO[bytes],
               when: float) -> str:
        """Store one message (body read from its start); where it went.
        Raises ``ArchiveError`` (one line) when it cannot."""
        ...
