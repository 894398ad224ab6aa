"""Fakes of the outside-world interfaces (bmslib.interfaces), shared by the tests."""

from __future__ import annotations

from bmslib.interfaces import DnsTempError, SenderStanding
from bmslib.policy.decision import AccessValue
from bmslib.policy.greylist import (
    GreylistKey,
    GreylistRecord,
    GreylistSettings,
    GreylistVerdict,
    StoreUnavailable,
    greylist_step,
)
from bmslib.state.lists import standing_of
from bmslib.state.records import BanEntry, ban_keys


class FakeResolver:
    def __init__(self, hosts: dict[str, list[str]], broken: frozenset[str] = frozenset()
                 ) -> None:
        self.hosts = hosts
        self.broken = broken
        self.asked: list[str] = []

    def addresses(self, name: str) -> list[str]:
        self.asked.append(name)
        if name in self.broken:
            raise DnsTempError(name)
        return self.hosts.get(name, [])

    def ptr(self, ip: str) -> list[str]:
        return []

    def mx(self, domain: str) -> list[tuple[int, str]]:
        return []

    def txt(self, name: str) -> list[bytes]:
        return []


class FakeAccess:
    def __init__(self, table: dict[tuple[str, str], AccessValue]) -> None:
        self.table = table
        self.asked: list[tuple[str, str]] = []

    def lookup(self, tag: str, subject: str) -> AccessValue | None:
        self.asked.append((tag, subject))
        return self.table.get((tag, subject))


class FakeStore:
    """An in-memory :class:`bmslib.interfaces.StateStore`; ``down`` makes
    every call raise StoreUnavailable (Redis stopped)."""

    path = "(memory)"

    def __init__(self) -> None:
        self.bans: list[tuple[str, float, str]] = []
        self.domain_bans: list[tuple[str, float, str]] = []
        self.lists: dict[tuple[str, str], float] = {}
        self.cache: dict[tuple[str, str], tuple[str, float]] = {}
        self.grey: dict[GreylistKey, GreylistRecord] = {}
        self.counters: dict[str, int] = {}
        self.reports: dict[tuple[int, str], int] = {}
        self.down = False

    def _up(self) -> None:
        if self.down:
            raise StoreUnavailable("redis redis://fake: Connection refused")

    def ban_ip(self, ip: str, until: float, reason: str) -> None:
        self._up()
        self.bans.append((ip, until, reason))

    def ip_banned(self, ip: str, now: float) -> bool:
        self._up()
        return any(b[0] == ip and b[1] > now for b in self.bans)

    def ban_domain(self, domain: str, until: float, reason: str) -> None:
        self._up()
        self.domain_bans.append((domain.lower(), until, reason))

    def domain_banned(self, domain: str, now: float) -> bool:
        self._up()
        d = domain.lower()
        return any(until > now and (key == d or (key.startswith("*.") and d.endswith(key[1:])))
                   for key, until, _ in self.domain_bans)

    def ban_in_force(self, kind: str, name: str, now: float) -> BanEntry | None:
        self._up()
        bans = self.bans if kind == "ip" else self.domain_bans
        for key in ban_keys(kind, name):
            for banned, until, reason in bans:
                if banned == key and until > now:
                    return BanEntry(kind, key, until, reason)
        return None

    def list_add(self, kind: str, entry: str, until: float) -> None:
        self._up()
        key = (kind, entry.lower())
        self.lists[key] = max(until, self.lists.get(key, until))

    def listed(self, kind: str, address: str, now: float) -> bool:
        self._up()
        a = address.lower()
        return any(self.lists.get((kind, k), 0.0) > now for k in (a, a.rpartition("@")[2]))

    def standing(self, domain: str | None, address: str | None, ip: str | None,
                 now: float) -> SenderStanding:
        return standing_of(self, domain, address, ip, now)

    def list_remove(self, kind: str, entry: str) -> None:
        self.lists.pop((kind, entry.lower()), None)

    def purge(self, now: float) -> int:
        return 0

    def cache_get(self, kind: str, key: str, now: float) -> str | None:
        self._up()
        hit = self.cache.get((kind, key))
        return hit[0] if hit is not None and hit[1] > now else None

    def cache_put(self, kind: str, key: str, value: str, until: float) -> None:
        self._up()
        self.cache[(kind, key)] = (value, until)

    def reserve(self, name: str, count: int) -> int:
        first = self.counters.get(name, 1)
        self.counters[name] = first + count
        return first

    def greylist(self, key: GreylistKey, now: float,
                 settings: GreylistSettings) -> GreylistVerdict:
        self._up()
        record, verdict = greylist_step(self.grey.get(key), now, settings)
        self.grey[key] = record
        return verdict

    def purge_greylist(self, now: float, settings: GreylistSettings) -> int:
        return 0

    def report_count(self, day: int, key: str, count: int = 1) -> None:
        self._up()
        self.reports[(day, key)] = self.reports.get((day, key), 0) + count

    def report_counts(self, first_day: int, last_day: int) -> list[tuple[int, str, int]]:
        return sorted((d, k, c) for (d, k), c in self.reports.items()
                      if first_day <= d <= last_day)

    def close(self) -> None:
        pass


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t
