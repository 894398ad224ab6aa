"""A state store that reads through to the real one and keeps its writes in
memory: ``bms test`` (:mod:`bmslib.cli.offline`) runs the policy against the
live bans, lists, greylist and CBV cache without changing them.

Every read sees the real store as changed by this process's own writes (a
ban it adds, a greylist attempt it makes), so one offline run behaves as the
daemon would, and nothing reaches the real store."""

from __future__ import annotations

from ..interfaces import AdminStore, SenderStanding
from ..policy.greylist import (
    GreylistKey,
    GreylistRecord,
    GreylistSettings,
    GreylistVerdict,
    greylist_step,
)
from .lists import check_kind, entry_key, lookup_keys, standing_of
from .records import BanEntry, GreylistMatch, ban_keys


class OverlayStore:
    """:class:`bmslib.interfaces.StateStore` over ``base``, writing nowhere."""

    def __init__(self, base: AdminStore) -> None:
        self.base = base
        self.path = f"{base.path} (read only)"
        self._bans: dict[tuple[str, str], BanEntry] = {}
        self._lists: dict[tuple[str, str], float] = {}  # until; 0.0: removed here
        self._cache: dict[tuple[str, str], tuple[str, float]] = {}
        self._grey: dict[GreylistKey, GreylistRecord] = {}
        self._counters: dict[str, int] = {}
        self._reports: dict[tuple[int, str], int] = {}

    def ban_ip(self, ip: str, until: float, reason: str) -> None:
        self._bans[("ip", ip)] = BanEntry("ip", ip, until, reason)

    def ip_banned(self, ip: str, now: float) -> bool:
        return self.ban_in_force("ip", ip, now) is not None

    def ban_domain(self, domain: str, until: float, reason: str) -> None:
        key = domain.lower()
        self._bans[("domain", key)] = BanEntry("domain", key, until, reason)

    def domain_banned(self, domain: str, now: float) -> bool:
        return self.ban_in_force("domain", domain, now) is not None

    def ban_in_force(self, kind: str, name: str, now: float) -> BanEntry | None:
        for key in ban_keys(kind, name):
            mine = self._bans.get((kind, key))
            if mine is not None and mine.until > now:
                return mine
        return self.base.ban_in_force(kind, name, now)

    def list_add(self, kind: str, entry: str, until: float) -> None:
        key = (check_kind(kind), entry_key(entry))
        if key[1]:
            self._lists[key] = max(until, self._lists.get(key, until))

    def standing(self, domain: str | None, address: str | None, ip: str | None,
                 now: float) -> SenderStanding:
        return standing_of(self, domain, address, ip, now)

    def listed(self, kind: str, address: str, now: float) -> bool:
        check_kind(kind)
        keys = lookup_keys(address)
        mine = {k: self._lists[(kind, k)] for k in keys if (kind, k) in self._lists}
        if any(until > now for until in mine.values()):
            return True
        if not mine:
            return self.base.listed(kind, address, now)
        rest = [k for k in keys if k not in mine]  # the keys changed here are not listed
        stored = {e.entry for e in self.base.list_entries(kind, now)} if rest else set()
        return any(k in stored for k in rest)

    def list_remove(self, kind: str, entry: str) -> None:
        self._lists[(check_kind(kind), entry_key(entry))] = 0.0

    def purge(self, now: float) -> int:
        return 0

    def cache_get(self, kind: str, key: str, now: float) -> str | None:
        mine = self._cache.get((kind, key))
        if mine is not None:
            return mine[0] if mine[1] > now else None
        return self.base.cache_get(kind, key, now)

    def cache_put(self, kind: str, key: str, value: str, until: float) -> None:
        self._cache[(kind, key)] = (value, until)

    def reserve(self, name: str, count: int) -> int:
        first = self._counters.get(name, 1)
        self._counters[name] = first + count
        return first

    def greylist(self, key: GreylistKey, now: float,
                 settings: GreylistSettings) -> GreylistVerdict:
        record = self._grey.get(key)
        if record is None:
            found = [e for e in self.base.greylist_entries(
                GreylistMatch(sender=key[1], recipient=key[2], client=key[0]))
                if (e.origin, e.sender, e.recipient) == key]
            if found:
                record = GreylistRecord(found[0].firstseen, found[0].lastseen, found[0].count)
        record, verdict = greylist_step(record, now, settings)
        self._grey[key] = record
        return verdict

    def purge_greylist(self, now: float, settings: GreylistSettings) -> int:
        return 0

    def report_count(self, day: int, key: str, count: int = 1) -> None:
        self._reports[(day, key)] = self._reports.get((day, key), 0) + count

    def report_counts(self, first_day: int, last_day: int) -> list[tuple[int, str, int]]:
        merged = {(d, k): n for d, k, n in self.base.report_counts(first_day, last_day)}
        for (day, key), n in self._reports.items():
            if first_day <= day <= last_day:
                merged[(day, key)] = merged.get((day, key), 0) + n
        return sorted((d, k, n) for (d, k), n in merged.items())

    def close(self) -> None:
        self.base.close()
