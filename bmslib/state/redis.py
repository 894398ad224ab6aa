"""The cluster state store: Redis, shared by several MX hosts (SPEC §6).

:class:`RedisStore` implements :class:`bmslib.interfaces.StateStore`, with the
semantics of :class:`bmslib.state.sqlite.SqliteStore` (one contract test
suite runs against both).  Keys start with ``bms:``
(``bms:ban:ip:<ip>``, ``bms:ban:domain:<name>``, ``bms:cache:<kind>:<key>``,
``bms:list:<kind>:<entry>``, ``bms:counter:<name>``,
``bms:grey:<sha256 of the triplet>``); every record carries its expiry
(field ``until``, ``inf`` for never) and also a Redis TTL (none for
``inf``), so nothing needs purging.  The greylist read-modify-write is one
Lua script mirroring :func:`bmslib.policy.greylist.greylist_step`.  Every
Redis error becomes :class:`~bmslib.policy.greylist.StoreUnavailable` (one
line), logged on logger ``bms`` as ``STATE: redis unavailable: ...`` at most
once per ``clock_log_interval`` seconds, and ``STATE: redis back`` once it
answers again.  No retries: a caller is told at once (``socket_timeout``).
Text with undecodable bytes (``surrogateescape``) is stored as those bytes.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..interfaces import REPORT_DAYS, SenderStanding
from ..policy.greylist import GreylistKey, GreylistSettings, GreylistVerdict, StoreUnavailable
from .lists import check_kind, entry_key, lookup_keys
from .records import BAN_KINDS, BanEntry, GreylistEntry, GreylistMatch, ListEntry, ban_keys

log = logging.getLogger("bms")

T = TypeVar("T")

PREFIX = "bms:"

# KEYS[1] the record; ARGV now, time, expire, retain (seconds).  Returns
# {passed 0/1, retry_after as text, count}.  Same rules as greylist_step.
_GREYLIST_LUA = """
local now = tonumber(ARGV[1])
local gtime = tonumber(ARGV[2])
local expire = tonumber(ARGV[3])
local retain = tonumber(ARGV[4])
local rec = redis.call('HMGET', KEYS[1], 'firstseen', 'lastseen', 'count')
local first = tonumber(rec[1])
local last = tonumber(rec[2])
local count = tonumber(rec[3])
local passed = 0
local retry = gtime
if first == nil or last == nil or count == nil or now - last > retain then
  first = now; count = 0
elseif now < first + gtime then
  retry = first + gtime - now
elseif count > 0 or now <= first + gtime + expire then
  count = count + 1; passed = 1; retry = 0
else
  first = now; count = 0
end
redis.call('HSET', KEYS[1], 'firstseen', string.format('%.17g', first),
           'lastseen', string.format('%.17g', now), 'count', tostring(count),
           'origin', ARGV[5], 'sender', ARGV[6], 'recipient', ARGV[7])
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(retain * 1000)))
return {passed, string.format('%.17g', retry), count}
"""

# KEYS[1] a record with an expiry (a ban, a list entry); ARGV until (epoch
# seconds, 'inf' for never), TTL in ms ('' for none), then field/value pairs.
# Keeps the later expiry (an equal one updates the fields).
_KEEP_LATER_LUA = """
local function num(v)
  if v == 'inf' then return math.huge end
  if not v then return nil end
  return tonumber(v)
end
local old = num(redis.call('HGET', KEYS[1], 'until'))
if old ~= nil and old > num(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'until', ARGV[1], unpack(ARGV, 3))
if ARGV[2] == '' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
end
return 1
"""

# KEYS[1] a greylist record; ARGV now, retain (ms), time (s).  Its next
# attempt passes: still waiting, it counts as first seen ``time`` ago; seen now.
_PASS_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local now = tonumber(ARGV[1])
if (tonumber(redis.call('HGET', KEYS[1], 'count')) or 0) == 0 then
  redis.call('HSET', KEYS[1], 'firstseen', string.format('%.17g', now - tonumber(ARGV[3])),
             'count', '0')
end
redis.call('HSET', KEYS[1], 'lastseen', ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""


def public_url(url: str) -> str:
    """``url`` without its password (for logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{parts.username}@{host}" if parts.username else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _ttl_ms(until: float) -> int | None:
    """Milliseconds from the wall clock to ``until`` (at least 1: Redis refuses 0);
    None for ``inf`` (no TTL)."""
    if math.isinf(until):
        return None
    return max(1, math.ceil((until - time.time()) * 1000))


def _until_text(until: float) -> str:
    """``until`` as stored: ``repr`` of the float (``inf`` for never)."""
    return repr(float(until))


def grey_key(key: GreylistKey) -> str:
    """``bms:grey:<sha256 hex of the NUL-joined triplet>``."""
    digest = hashlib.sha256("\0".join(key).encode("utf-8", "surrogateescape")).hexdigest()
    return f"{PREFIX}grey:{digest}"


class RedisStore:
    def __init__(self, url: str, *, socket_timeout: float = 1.0,
                 clock_log_interval: float = 60) -> None:
        self.path = public_url(url)
        self.clock_log_interval = clock_log_interval
        self._redis: redis.Redis = redis.Redis.from_url(
            url, socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0), decode_responses=True,
            encoding_errors="surrogateescape")
        self._greylist_script = self._redis.register_script(_GREYLIST_LUA)
        self._keep_later_script = self._redis.register_script(_KEEP_LATER_LUA)
        self._pass_script = self._redis.register_script(_PASS_LUA)
        self._lock = threading.Lock()
        self._down = False
        self._last_log: float | None = None

    def close(self) -> None:
        self._redis.close()

    # --- error handling ---------------------------------------------------------------

    def _call(self, op: Callable[[], T]) -> T:
        """Run ``op``; a Redis error becomes :class:`StoreUnavailable` (logged, rate-limited)."""
        try:
            result = op()
        except (redis.RedisError, OSError) as exc:
            text = " ".join(str(exc).split()) or type(exc).__name__
            self._failed(text)
            raise StoreUnavailable(f"redis {self.path}: {text}") from exc
        if self._down:
            with self._lock:
                if self._down:
                    self._down = False
                    self._last_log = None
                    log.warning("STATE: redis back")
        return result

    def _failed(self, text: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._down = True
            if self._last_log is None or now - self._last_log >= self.clock_log_interval:
                self._last_log = now
                log.warning("STATE: redis unavailable: %s: %s", self.path, text)

    # --- records with an expiry, bans --------------------------------------------------

    def _keep_later(self, name: str, until: float, *fields: str) -> None:
        """Set record ``name`` to expire at ``until`` unless it already expires later."""
        ttl = _ttl_ms(until)
        args = [_until_text(until), "" if ttl is None else str(ttl), *fields]
        self._call(lambda: self._keep_later_script(keys=[name], args=args))

    def _any_unexpired(self, names: list[str], now: float) -> bool:
        """One of the records ``names`` expires after ``now``."""
        def op() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for name in names:
                pipe.hget(name, "until")
            return pipe.execute()
        return any(value is not None and float(value) > now for value in self._call(op))

    def _ban(self, kind: str, key: str, until: float, reason: str) -> None:
        self._keep_later(f"{PREFIX}ban:{kind}:{key}", until, "reason", reason)

    def _banned(self, kind: str, keys: list[str], now: float) -> bool:
        return self._any_unexpired([f"{PREFIX}ban:{kind}:{key}" for key in keys], now)

    def ban_ip(self, ip: str, until: float, reason: str) -> None:
        self._ban("ip", ip, until, reason)

    def ip_banned(self, ip: str, now: float) -> bool:
        return self._banned("ip", [ip], now)

    def ban_domain(self, domain: str, until: float, reason: str) -> None:
        self._ban("domain", domain.lower(), until, reason)

    def domain_banned(self, domain: str, now: float) -> bool:
        """``x.y`` bans exactly x.y; ``*.x.y`` bans every name below x.y."""
        return self._banned("domain", ban_keys("domain", domain), now)

    def ban_in_force(self, kind: str, name: str, now: float) -> BanEntry | None:
        keys = ban_keys(kind, name)

        def op() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(f"{PREFIX}ban:{kind}:{key}", ["until", "reason"])
            return pipe.execute()
        for key, (until, reason) in zip(keys, self._call(op), strict=True):
            if until is not None and float(until) > now:
                return BanEntry(kind, key, float(until), reason or "")
        return None

    def purge(self, now: float) -> int:
        """Nothing to do: Redis expires the keys itself."""
        return 0

    # --- caches -----------------------------------------------------------------------

    def cache_get(self, kind: str, key: str, now: float) -> str | None:
        def op() -> list[Any]:
            return list(self._redis.hmget(f"{PREFIX}cache:{kind}:{key}", ["until", "value"]))
        until, value = self._call(op)
        if until is None or value is None or float(until) <= now:
            return None
        return str(value)

    def cache_put(self, kind: str, key: str, value: str, until: float) -> None:
        name, ttl = f"{PREFIX}cache:{kind}:{key}", _ttl_ms(until)

        def op() -> list[Any]:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(name, mapping={"until": _until_text(until), "value": value})
            if ttl is None:
                pipe.persist(name)
            else:
                pipe.pexpire(name, ttl)
            return pipe.execute()
        self._call(op)

    # --- address lists (auto-whitelist, blacklist; bmslib.state.lists) ---------------

    def list_add(self, kind: str, entry: str, until: float) -> None:
        """Add ``entry`` (address or bare domain) to list ``kind`` until ``until``
        (``math.inf``: never expires); an existing entry keeps the later expiry."""
        check_kind(kind)
        key = entry_key(entry)
        if key:
            self._keep_later(f"{PREFIX}list:{kind}:{key}", until)

    def listed(self, kind: str, address: str, now: float) -> bool:
        """``address`` or its domain has an unexpired entry in list ``kind``."""
        check_kind(kind)
        keys = lookup_keys(address)
        return bool(keys) and self._any_unexpired(
            [f"{PREFIX}list:{kind}:{key}" for key in keys], now)

    def standing(self, domain: str | None, address: str | None, ip: str | None,
                 now: float) -> SenderStanding:
        """One pipeline (one round trip) for the bans and both lists."""
        groups = [[f"{PREFIX}ban:domain:{key}" for key in ban_keys("domain", domain)]
                  if domain is not None else []]
        keys = lookup_keys(address) if address is not None else []
        groups += [[f"{PREFIX}list:{kind}:{key}" for key in keys] for kind in ("blacklist",
                                                                                "whitelist")]
        groups.append([f"{PREFIX}ban:ip:{ip}"] if ip is not None else [])
        if not any(groups):
            return SenderStanding()

        def op() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for name in (n for group in groups for n in group):
                pipe.hget(name, "until")
            return pipe.execute()
        values = iter(self._call(op))
        ban, black, white, ip_ban = (any([v is not None and float(v) > now
                                          for v in (next(values) for _ in group)])
                                     for group in groups)
        return SenderStanding(ban, black, white, ip_ban)

    def list_remove(self, kind: str, entry: str) -> None:
        """Remove ``entry`` from list ``kind`` (nothing when it is not there)."""
        name = f"{PREFIX}list:{check_kind(kind)}:{entry_key(entry)}"
        self._call(lambda: self._redis.delete(name))

    # --- counters ---------------------------------------------------------------------

    def reserve(self, name: str, count: int) -> int:
        """Reserve ``count`` consecutive numbers of counter ``name`` (from 1); the first."""
        last = int(self._call(lambda: self._redis.incrby(f"{PREFIX}counter:{name}", count)))
        return last - count + 1

    # --- aggregate-report counters (a hash per day) -----------------------------------

    def report_count(self, day: int, key: str, count: int = 1) -> None:
        name = f"{PREFIX}report:{day}"

        def op() -> list[Any]:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hincrby(name, key, count)
            pipe.expireat(name, (day + 1 + REPORT_DAYS) * 86400)
            return pipe.execute()
        self._call(op)

    def report_counts(self, first_day: int, last_day: int) -> list[tuple[int, str, int]]:
        days = list(range(first_day, last_day + 1))

        def op() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for day in days:
                pipe.hgetall(f"{PREFIX}report:{day}")
            return pipe.execute()
        found = self._call(op)
        return sorted((day, str(k), int(v)) for day, rows in zip(days, found, strict=True)
                      for k, v in rows.items())

    # --- greylisting ------------------------------------------------------------------

    def greylist(self, key: GreylistKey, now: float,
                 settings: GreylistSettings) -> GreylistVerdict:
        """One attempt of the triplet ``key``, atomic on the server (Lua)."""
        args = [repr(float(now)), repr(settings.time), repr(settings.expire),
                repr(settings.retain), *key]
        passed, retry, count = self._call(
            lambda: self._greylist_script(keys=[grey_key(key)], args=args))
        return GreylistVerdict(bool(int(passed)), float(retry), int(count))

    def purge_greylist(self, now: float, settings: GreylistSettings) -> int:
        """Nothing to do: each record's TTL is ``retain``."""
        return 0

    # --- administration (bmslib.interfaces.StoreAdmin) ---------------------------------

    def _records(self, pattern: str) -> list[tuple[str, dict[str, str]]]:
        """``(key, fields)`` of every hash whose key matches ``pattern``, sorted by key."""
        def op() -> list[tuple[str, dict[str, str]]]:
            keys = sorted(self._redis.scan_iter(match=pattern, count=1000))
            pipe = self._redis.pipeline(transaction=False)
            for key in keys:
                pipe.hgetall(key)
            return [(k, v) for k, v in zip(keys, pipe.execute(), strict=True) if v]
        return self._call(op)

    def bans(self, now: float) -> list[BanEntry]:
        found = []
        for name, fields in self._records(f"{PREFIX}ban:*"):
            kind, _, key = name[len(PREFIX) + 4:].partition(":")
            until = float(fields.get("until", "0"))
            if kind in BAN_KINDS and until > now:
                found.append(BanEntry(kind, key, until, fields.get("reason", "")))
        return found

    def unban(self, kind: str, key: str) -> bool:
        key = key.lower() if kind == "domain" else key
        return bool(self._call(lambda: self._redis.delete(f"{PREFIX}ban:{kind}:{key}")))

    def list_entries(self, kind: str, now: float) -> list[ListEntry]:
        start = f"{PREFIX}list:{check_kind(kind)}:"
        return [ListEntry(kind, name[len(start):], float(fields["until"]))
                for name, fields in self._records(f"{start}*")
                if float(fields.get("until", "0")) > now]

    def _grey(self, match: GreylistMatch) -> list[tuple[str, GreylistEntry]]:
        found = []
        for name, f in self._records(f"{PREFIX}grey:*"):
            entry = GreylistEntry(f.get("origin", ""), f.get("sender", ""),
                                  f.get("recipient", ""), float(f.get("firstseen", "0")),
                                  float(f.get("lastseen", "0")), int(f.get("count", "0")))
            if match.matches(entry):
                found.append((name, entry))
        found.sort(key=lambda item: (item[1].origin, item[1].sender, item[1].recipient))
        return found

    def greylist_entries(self, match: GreylistMatch) -> list[GreylistEntry]:
        return [entry for _, entry in self._grey(match)]

    def greylist_pass(self, match: GreylistMatch, now: float,
                      settings: GreylistSettings) -> int:
        args = [repr(float(now)), str(max(1, math.ceil(settings.retain * 1000))),
                repr(settings.time)]
        names = [name for name, _ in self._grey(match)]

        def op() -> list[Any]:
            pipe = self._redis.pipeline(transaction=False)
            for name in names:
                self._pass_script(keys=[name], args=args, client=pipe)
            return pipe.execute()
        return sum(int(done) for done in self._call(op))

    def greylist_forget(self, match: GreylistMatch) -> int:
        names = [name for name, _ in self._grey(match)]
        return int(self._call(lambda: self._redis.delete(*names))) if names else 0
