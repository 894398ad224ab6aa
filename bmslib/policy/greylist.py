"""Greylisting (SPEC §4 RCPT, §4a; inventory §2.10), pure.

A triplet (authenticated SPF domain or the client's /24 or /64, sender,
recipient) seen for the first time is answered 451 4.7.1; a retry after
``time`` minutes, and no later than ``expire`` hours after the first
attempt, passes, and from then on every message of the triplet passes until
it has not been seen for ``retain`` days.  :func:`greylist_step` is the one
implementation of these rules (the SQLite store runs it inside a
transaction; the Redis store mirrors it in a Lua script, tested against the
same suite).  A store that cannot answer raises :class:`StoreUnavailable`,
which :func:`decide_unavailable` turns into a tempfail, never an accept.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Protocol

from .decision import CONTINUE, Decision

GreylistKey = tuple[str, str, str]


class StoreUnavailable(Exception):
    """The state store backend is down or timed out; the message is one line."""


@dataclass(frozen=True)
class GreylistSettings:
    """``[greylist]``: ``time`` minutes, ``expire`` hours, ``retain`` days."""

    time_minutes: float = 5
    expire_hours: float = 6
    retain_days: float = 36

    @property
    def time(self) -> float:
        """The early-retry window in seconds."""
        return self.time_minutes * 60.0

    @property
    def expire(self) -> float:
        """How long after ``time`` the first retry may come, in seconds."""
        return self.expire_hours * 3600.0

    @property
    def retain(self) -> float:
        """How long an unseen record is kept, in seconds."""
        return self.retain_days * 86400.0


@dataclass(frozen=True)
class GreylistRecord:
    """One stored triplet: first and last attempt (epoch seconds), passes so far."""

    firstseen: float
    lastseen: float
    count: int = 0


@dataclass(frozen=True)
class GreylistVerdict:
    """``passed``; ``retry_after`` seconds until a retry passes (0 when passed);
    ``count`` the passes of the triplet so far (0 while greylisted)."""

    passed: bool
    retry_after: float
    count: int


class GreylistStore(Protocol):
    def greylist(self, key: GreylistKey, now: float,
                 settings: GreylistSettings) -> GreylistVerdict:
        """Record one attempt of ``key`` atomically; raises :class:`StoreUnavailable`."""
        ...


def greylist_key(ip: str, spf_pass_domain: str | None, sender: str,
                 recipient: str) -> GreylistKey:
    """``(origin, sender, recipient)``: origin is the SPF-pass domain (lowercased)
    when given, else the client IP as its /24 (IPv4, also IPv4-mapped IPv6) or
    /64 (IPv6) network in CIDR text; unparsable IP text is used as it is."""
    origin = spf_pass_domain.lower() if spf_pass_domain else mask_ip(ip)
    return origin, sender.lower(), recipient.lower()


def mask_ip(ip: str) -> str:
    """``192.0.2.77`` -> ``192.0.2.0/24``; ``2001:db8::1`` -> ``2001:db8::/64``."""
    text = ip.strip().strip("[]")
    if text.lower().startswith("ipv6:"):
        text = text[5:]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return ip.lower()
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def greylist_step(record: GreylistRecord | None, now: float,
                  settings: GreylistSettings) -> tuple[GreylistRecord, GreylistVerdict]:
    """One attempt against ``record`` (None: never seen); the record to store and
    the verdict.  New or retained past ``retain`` or first retry later than
    ``time + expire``: start afresh (greylisted).  Before ``firstseen + time``:
    greylisted, lastseen updated.  Otherwise: pass, count + 1."""
    fresh = (GreylistRecord(now, now, 0), GreylistVerdict(False, settings.time, 0))
    if record is None or now - record.lastseen > settings.retain:
        return fresh
    if now < record.firstseen + settings.time:
        return (GreylistRecord(record.firstseen, now, record.count),
                GreylistVerdict(False, record.firstseen + settings.time - now, 0))
    if record.count > 0 or now <= record.firstseen + settings.time + settings.expire:
        count = record.count + 1
        return GreylistRecord(record.firstseen, now, count), GreylistVerdict(True, 0.0, count)
    return fresh


def expired(record: GreylistRecord, now: float, settings: GreylistSettings) -> bool:
    """A record the next attempt would start afresh (safe to purge)."""
    return (now - record.lastseen > settings.retain
            or (record.count == 0
                and now > record.firstseen + settings.time + settings.expire))


def retry_minutes(retry_after: float) -> int:
    """Whole minutes, rounded up; at least 1 when any wait remains."""
    return max(1, math.ceil(retry_after / 60.0)) if retry_after > 0 else 0


def decide(verdict: GreylistVerdict, key: GreylistKey | None = None) -> Decision:
    """Greylisted: 451 4.7.1 with a retry hint (log ``greylist <origin> <from>
    <to>`` when ``key`` is given); passed: CONTINUE."""
    if verdict.passed:
        return CONTINUE
    minutes = retry_minutes(verdict.retry_after)
    if minutes:
        unit = "minute" if minutes == 1 else "minutes"
        text = f"Greylisted: please retry in {minutes} {unit}."
    else:
        text = "Greylisted: please retry now."
    log = "greylist" if key is None else "greylist " + " ".join(key)
    return Decision.tempfail("greylist", text, code="451", xcode="4.7.1", log=log)


def decide_unavailable(exc: StoreUnavailable) -> Decision:
    """The store is down: tempfail (never accept unchecked mail)."""
    return Decision.tempfail("greylist", "Greylisting is unavailable; please retry later.",
                             code="451", xcode="4.7.1", log=f"greylist unavailable: {exc}")
