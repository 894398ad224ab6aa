"""The state-store contract (bmslib.interfaces.StateStore): every operation,
the same test bodies run against the SQLite store and against the Redis
store on a real redis-server (database 3, flushed for each test).

Times: the stores compare the ``until`` they stored with the ``now`` they are
given, so expiry is tested by passing a later ``now``.  Redis also sets a TTL
from the wall clock, so records that must survive are stored at least an
hour ahead of ``time.time()``; nothing here waits or measures elapsed time.
What only one backend has lives in test_redis_store.py and at the end here.
"""

from __future__ import annotations

import gzip
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

import pytest
import redis
from testbed.redisd import RedisServer
from testbed.redisd import redis_server as redis_server  # the session fixture

from bmslib.interfaces import AdminStore, BanStore, SenderStanding, StateStore
from bmslib.policy.greylist import GreylistSettings, GreylistStore, GreylistVerdict
from bmslib.state.cbvcache import CacheStore
from bmslib.state.legacy import import_legacy
from bmslib.state.records import BanEntry, GreylistEntry, GreylistMatch, ListEntry
from bmslib.state.redis import RedisStore
from bmslib.state.sqlite import SqliteStore

DAY = 86400.0
HOUR = 3600.0
T = TypeVar("T")
T0 = 1_700_000_000.0  # greylist records carry no wall-clock TTL but retain
S = GreylistSettings()  # 5 min, 6 h, 36 d
KEY = ("192.0.2.0/24", "a@example.com", "b@example.org")
ODD = "caf\udce9@example.com"  # a latin-1 byte kept by surrogateescape
REDIS_DB = 3
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

Store = SqliteStore | RedisStore


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's database 3, emptied for this test."""
    url = f"{redis_server.url.rsplit('/', 1)[0]}/{REDIS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store
    if request.param == "sqlite":
        s = SqliteStore(tmp_path / "state.db")
    else:
        s = RedisStore(request.getfixturevalue("redis_url"))
    yield s
    s.close()


@pytest.fixture
def now() -> float:
    """The wall clock at the start of the test (Redis TTLs count from it)."""
    return time.time()


# --- the interface ------------------------------------------------------------------------

PUBLIC = ("ban_ip", "ip_banned", "ban_domain", "domain_banned", "purge", "cache_get",
          "cache_put", "reserve", "greylist", "purge_greylist", "list_add", "listed",
          "list_remove", "close", "bans", "unban", "list_entries", "greylist_entries",
          "greylist_pass", "greylist_forget", "ban_in_force", "report_count", "report_counts",
          "standing")



def in_threads(call: Callable[[], T], rounds: int, threads: int = 3) -> list[T]:
    """``call`` made ``rounds`` times by each of ``threads`` threads at once; the results."""
    results: list[T] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(rounds):
            value = call()
            with lock:
                results.append(value)

    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return results

def test_both_stores_have_the_whole_interface(store: Store) -> None:
    typed: StateStore = store  # checked by mypy
    admin: AdminStore = store
    bans: BanStore = store
    grey: GreylistStore = store
    cache: CacheStore = store
    assert {id(typed), id(admin), id(bans), id(grey), id(cache)} == {id(store)}
    assert all(callable(getattr(store, name)) for name in PUBLIC)
    assert isinstance(store.path, str) and store.path
    assert not {name for name in dir(store) if not name.startswith("_")} - {*PUBLIC, "path"} - {
        "clock_log_interval"}  # RedisStore's log rate setting


# --- aggregate-report counters ------------------------------------------------------------

def test_report_counters_add_up_per_day_and_key(store: Store, now: float) -> None:
    d = int(now // 86400) - 10  # counters are kept 62 days
    store.report_count(d, '{"d":"a.example"}')
    store.report_count(d, '{"d":"a.example"}', 2)
    store.report_count(d + 1, '{"d":"a.example"}')
    store.report_count(d + 5, '{"d":"a.example"}')
    assert store.report_counts(d, d + 1) == [
        (d, '{"d":"a.example"}', 3), (d + 1, '{"d":"a.example"}', 1)]
    assert store.report_counts(d + 2, d + 4) == []
    store.report_count(d + 3, "b\udce9")  # 8-bit text is stored, one way or another
    [(day, _, count)] = store.report_counts(d + 2, d + 4)
    assert (day, count) == (d + 3, 1)


def test_report_counters_from_threads_are_never_lost(store: Store, now: float) -> None:
    d = int(now // 86400) - 10  # counters are kept 62 days
    in_threads(lambda: store.report_count(d, "k"), rounds=20)
    assert store.report_counts(d, d) == [(d, "k", 60)]


# --- bans ---------------------------------------------------------------------------------

def test_ip_bans_expire_and_are_never_shortened(store: Store, now: float) -> None:
    store.ban_ip("192.0.2.1", now + HOUR, "demerits")
    store.ban_ip("2001:db8::1", now + HOUR, "demerits")
    assert store.ip_banned("192.0.2.1", now)
    assert store.ip_banned("2001:db8::1", now)
    assert not store.ip_banned("192.0.2.2", now)
    assert not store.ip_banned("192.0.2.1", now + HOUR)  # until is exclusive
    store.ban_ip("192.0.2.1", now + 60, "shorter")
    assert store.ip_banned("192.0.2.1", now + 120)
    store.ban_ip("192.0.2.1", now + 2 * HOUR, "longer")
    assert store.ip_banned("192.0.2.1", now + HOUR + 1)


def test_domain_bans_exact_and_wildcard(store: Store, now: float) -> None:
    store.ban_domain("Spam.Example", now + HOUR, "spam")
    store.ban_domain("*.bulk.test", now + HOUR, "spam")
    assert store.domain_banned("spam.example", now)
    assert store.domain_banned("SPAM.example", now)
    assert not store.domain_banned("a.spam.example", now)
    assert store.domain_banned("x.y.BULK.test", now)
    assert store.domain_banned("mx.bulk.test", now)
    assert not store.domain_banned("bulk.test", now)
    assert not store.domain_banned("notbulk.test", now)
    assert not store.domain_banned("spam.example", now + HOUR + 1)


def test_manual_ban_never_expires(store: Store, now: float) -> None:
    store.ban_ip("192.0.2.3", math.inf, "manual")
    store.ban_ip("192.0.2.3", now + HOUR, "later offence")  # never shortens
    store.ban_domain("*.forever.test", math.inf, "manual")
    assert store.ip_banned("192.0.2.3", now + 1000 * DAY)
    assert store.domain_banned("a.forever.test", now + 1000 * DAY)


# --- purge --------------------------------------------------------------------------------

def test_purge_removes_only_what_expired(store: Store, now: float) -> None:
    for n, until in enumerate((now + HOUR, now + 2 * HOUR, math.inf), 1):
        store.ban_ip(f"192.0.2.{n}", until, "x")
        store.ban_domain(f"d{n}.test", until, "x")
        store.cache_put("cbv", f"k{n}", "v", until)
        store.list_add("whitelist", f"w{n}@example.com", until)
    later = now + HOUR + 1
    assert store.purge(later) >= 0  # SQLite: rows removed; Redis: 0, keys expire alone
    assert [store.ip_banned(f"192.0.2.{n}", later) for n in (1, 2, 3)] == [False, True, True]
    assert [store.domain_banned(f"d{n}.test", later) for n in (1, 2, 3)] == [
        False, True, True]
    assert [store.cache_get("cbv", f"k{n}", later) for n in (1, 2, 3)] == [None, "v", "v"]
    assert [store.listed("whitelist", f"w{n}@example.com", later) for n in (1, 2, 3)] == [
        False, True, True]
    forever = now + 10_000 * DAY
    assert store.purge(forever) >= 0
    assert store.ip_banned("192.0.2.3", forever)
    assert store.domain_banned("d3.test", forever)
    assert store.cache_get("cbv", "k3", forever) == "v"
    assert store.listed("whitelist", "w3@example.com", forever)


# --- cache --------------------------------------------------------------------------------

def test_cache_get_put_and_expiry(store: Store, now: float) -> None:
    assert store.cache_get("cbv", "a@b", now) is None
    store.cache_put("cbv", "a@b", '{"x": 1}', now + HOUR)
    assert store.cache_get("cbv", "a@b", now) == '{"x": 1}'
    assert store.cache_get("dsn", "a@b", now) is None  # kinds are separate
    assert store.cache_get("cbv", "A@b", now) is None  # keys are exact
    assert store.cache_get("cbv", "a@b", now + HOUR) is None
    store.cache_put("cbv", "a@b", "new", now + 2 * HOUR)
    assert store.cache_get("cbv", "a@b", now + HOUR + 1) == "new"
    store.cache_put("cbv", "a@b", "shorter", now + HOUR)  # a put replaces, expiry too
    assert store.cache_get("cbv", "a@b", now + HOUR + 1) is None
    assert store.cache_get("cbv", "a@b", now) == "shorter"


def test_cache_entry_that_never_expires(store: Store, now: float) -> None:
    store.cache_put("marker", "done", "yes", math.inf)
    assert store.cache_get("marker", "done", now + 1000 * DAY) == "yes"


# --- counters -----------------------------------------------------------------------------

def test_reserve_hands_out_blocks(store: Store) -> None:
    assert store.reserve("connid", 100) == 1
    assert store.reserve("connid", 100) == 101
    assert store.reserve("other", 5) == 1
    assert store.reserve("connid", 1) == 201


def test_reserve_from_threads_never_hands_out_twice(store: Store) -> None:
    firsts = in_threads(lambda: store.reserve("connid", 10), rounds=20)
    assert sorted(firsts) == list(range(1, 601, 10))


# --- greylisting --------------------------------------------------------------------------

def test_greylist_life_cycle(store: Store) -> None:
    assert store.greylist(KEY, T0, S) == GreylistVerdict(False, 300.0, 0)  # new
    assert store.greylist(KEY, T0 + 60.5, S) == GreylistVerdict(False, 239.5, 0)  # early
    assert store.greylist(KEY, T0 + 300, S) == GreylistVerdict(True, 0.0, 1)  # retry
    other = (KEY[0], KEY[1], "c@example.org")
    assert not store.greylist(other, T0 + 300, S).passed  # triplets are separate
    assert store.greylist(KEY, T0 + 10 * DAY, S) == GreylistVerdict(True, 0.0, 2)  # known
    assert store.greylist(KEY, T0 + 46 * DAY, S).count == 3  # exactly retain: kept
    gone = T0 + 46 * DAY + 36 * DAY + 1
    assert store.greylist(KEY, gone, S) == GreylistVerdict(False, 300.0, 0)  # forgotten
    assert store.greylist(KEY, gone + 300, S) == GreylistVerdict(True, 0.0, 1)


def test_greylist_late_first_retry_and_time_zero(store: Store) -> None:
    store.greylist(KEY, T0, S)
    late = T0 + 300 + 6 * HOUR + 1
    assert store.greylist(KEY, late, S) == GreylistVerdict(False, 300.0, 0)
    assert store.greylist(KEY, late + 300, S).passed
    zero = GreylistSettings(time_minutes=0)
    other = (KEY[0], KEY[1], "z@example.org")
    assert store.greylist(other, T0, zero) == GreylistVerdict(False, 0.0, 0)
    assert store.greylist(other, T0, zero) == GreylistVerdict(True, 0.0, 1)


def test_greylist_first_retry_at_the_end_of_expire_passes(store: Store) -> None:
    store.greylist(KEY, T0, S)
    assert store.greylist(KEY, T0 + 300 + 6 * HOUR, S) == GreylistVerdict(True, 0.0, 1)


def test_purge_greylist_forgets_only_expired_records(store: Store) -> None:
    passed = ("192.0.2.0/24", "a@x", "old@y")
    store.greylist(passed, T0, S)
    store.greylist(passed, T0 + 300, S)
    never_retried = ("192.0.2.0/24", "a@x", "new@y")
    store.greylist(never_retried, T0, S)
    assert store.purge_greylist(T0 + 301, S) >= 0
    assert store.greylist(passed, T0 + 1000, S) == GreylistVerdict(True, 0.0, 2)
    after_expire = T0 + 300 + 6 * HOUR + 1
    assert store.purge_greylist(after_expire, S) >= 0
    assert store.greylist(never_retried, after_expire, S) == GreylistVerdict(False, 300.0, 0)
    assert store.greylist(passed, after_expire, S).count == 3


def test_concurrent_greylist_attempts_are_never_lost(store: Store) -> None:
    store.greylist(KEY, T0, S)
    counts = in_threads(lambda: store.greylist(KEY, T0 + 300, S).count, rounds=25)
    assert sorted(counts) == list(range(1, 76))


# --- address lists ------------------------------------------------------------------------

def test_list_entry_expires_and_keeps_the_later_expiry(store: Store, now: float) -> None:
    store.list_add("whitelist", "alice@example.com", now + HOUR)
    assert store.listed("whitelist", "alice@example.com", now)
    assert not store.listed("whitelist", "alice@example.com", now + HOUR)
    store.list_add("whitelist", "alice@example.com", now + 60)  # never shortens
    assert store.listed("whitelist", "alice@example.com", now + HOUR - 1)
    store.list_add("whitelist", "alice@example.com", now + 2 * HOUR)  # renews
    assert store.listed("whitelist", "alice@example.com", now + HOUR + 1)


def test_manual_list_entry_never_expires(store: Store, now: float) -> None:
    store.list_add("blacklist", "spammer@example.net", math.inf)
    store.list_add("blacklist", "spammer@example.net", now + HOUR)  # stays manual
    assert store.listed("blacklist", "spammer@example.net", now + 10_000 * DAY)
    store.list_add("whitelist", "bob@example.org", now + HOUR)
    store.list_add("whitelist", "bob@example.org", math.inf)  # made manual
    assert store.listed("whitelist", "bob@example.org", now + 10_000 * DAY)


def test_standing_is_the_separate_answers_in_one_read(store: Store, now: float) -> None:
    store.ban_domain("*.spam.example", now + HOUR, "wildcard")
    store.ban_domain("banned.example", now + HOUR, "exact")
    store.ban_domain("old.example", now + 60, "expires")
    store.list_add("blacklist", "bad@mixed.example", now + HOUR)
    store.list_add("whitelist", "mixed.example", now + HOUR)
    store.list_add("whitelist", "friend@banned.example", now + HOUR)
    store.list_add("blacklist", "gone@x.example", now + 60)
    cases = [("a.spam.example", "u@a.spam.example"), ("spam.example", "u@spam.example"),
             ("banned.example", "friend@banned.example"), ("old.example", "u@old.example"),
             ("mixed.example", "bad@mixed.example"), ("mixed.example", "good@mixed.example"),
             ("x.example", "gone@x.example"), ("x.example", "GONE@X.example"),
             ("none.example", "u@none.example"), ("mixed.example", None)]
    for when in (now, now + 120):
        for domain, address in cases:
            expected = SenderStanding(
                store.domain_banned(domain, when),
                address is not None and store.listed("blacklist", address, when),
                address is not None and store.listed("whitelist", address, when))
            assert store.standing(domain, address, None, when) == expected, (domain, address)
    assert store.standing("a.spam.example", "u@a.spam.example", None, now).banned
    assert store.standing("mixed.example", "bad@mixed.example", None, now) == SenderStanding(
        False, True, True)
    assert store.standing("mixed.example", None, None, now) == SenderStanding()
    assert not store.standing("x.example", "gone@x.example", None, now + 120).blacklisted
    store.ban_ip("192.0.2.66", now + HOUR, "ip")
    store.ban_ip("192.0.2.67", now + 60, "expires")
    senders: list[tuple[str | None, str | None]] = [
        ("banned.example", "friend@banned.example"), (None, None)]
    for when in (now, now + 120):
        for ip in ("192.0.2.66", "192.0.2.67", "192.0.2.68", "2001:db8::1"):
            for of, who in senders:
                expected = SenderStanding(
                    of is not None and store.domain_banned(of, when),
                    who is not None and store.listed("blacklist", who, when),
                    who is not None and store.listed("whitelist", who, when),
                    store.ip_banned(ip, when))
                assert store.standing(of, who, ip, when) == expected, (ip, of, when)
    assert store.standing(None, None, "192.0.2.66", now) == SenderStanding(ip_banned=True)
    assert store.standing(None, None, None, now) == SenderStanding()


def test_list_domain_entry_covers_its_addresses_only(store: Store, now: float) -> None:
    store.list_add("whitelist", "partner.example", now + HOUR)
    assert store.listed("whitelist", "anyone@partner.example", now)
    assert store.listed("whitelist", "partner.example", now)
    assert store.listed("whitelist", '"odd@local"@partner.example', now)  # the last @
    assert not store.listed("whitelist", "anyone@mail.partner.example", now)  # no parents
    assert not store.listed("whitelist", "mail.partner.example", now)
    assert not store.listed("whitelist", "partner.example@elsewhere.test", now)
    assert not store.listed("whitelist", "anyone@partner.example", now + HOUR)


def test_list_address_entry_does_not_cover_its_domain(store: Store, now: float) -> None:
    store.list_add("blacklist", "bad@example.com", now + HOUR)
    assert store.listed("blacklist", "bad@example.com", now)
    assert not store.listed("blacklist", "good@example.com", now)
    assert not store.listed("blacklist", "example.com", now)


def test_list_is_case_insensitive(store: Store, now: float) -> None:
    store.list_add("whitelist", "Alice@Example.COM", now + HOUR)
    store.list_add("whitelist", "Partner.Example", now + HOUR)
    assert store.listed("whitelist", "alice@example.com", now)
    assert store.listed("whitelist", "ALICE@EXAMPLE.com", now)
    assert store.listed("whitelist", "x@PARTNER.example", now)
    store.list_remove("whitelist", "ALICE@example.com")
    assert not store.listed("whitelist", "alice@example.com", now)


def test_list_kinds_are_separate_and_checked(store: Store, now: float) -> None:
    store.list_add("whitelist", "alice@example.com", now + HOUR)
    assert not store.listed("blacklist", "alice@example.com", now)
    store.list_add("blacklist", "alice@example.com", now + HOUR)
    store.list_remove("whitelist", "alice@example.com")
    assert not store.listed("whitelist", "alice@example.com", now)
    assert store.listed("blacklist", "alice@example.com", now)
    for bad in ("greylist", "WHITELIST", ""):
        with pytest.raises(ValueError, match="unknown address list"):
            store.list_add(bad, "x@example.com", now + HOUR)
        with pytest.raises(ValueError, match="unknown address list"):
            store.listed(bad, "x@example.com", now)
        with pytest.raises(ValueError, match="unknown address list"):
            store.list_remove(bad, "x@example.com")


def test_list_remove_and_empty_entries(store: Store, now: float) -> None:
    store.list_remove("whitelist", "never@added.example")  # nothing there: fine
    store.list_add("whitelist", "partner.example", now + HOUR)
    store.list_remove("whitelist", "other@partner.example")  # not an entry: no effect
    assert store.listed("whitelist", "other@partner.example", now)
    store.list_remove("whitelist", " partner.example ")
    assert not store.listed("whitelist", "other@partner.example", now)
    store.list_add("blacklist", "", now + HOUR)  # ignored
    store.list_add("blacklist", "   ", now + HOUR)
    assert not store.listed("blacklist", "", now)
    assert not store.listed("blacklist", "@", now)


def test_expired_list_entry_added_is_not_listed(store: Store, now: float) -> None:
    store.list_add("whitelist", "late@example.com", now - DAY)
    assert not store.listed("whitelist", "late@example.com", now)


# --- 8-bit text ---------------------------------------------------------------------------

def test_eight_bit_text_everywhere(store: Store, now: float) -> None:
    key = ("192.0.2.0/24", ODD, "b@example.org")
    assert not store.greylist(key, T0, S).passed
    assert store.greylist(key, T0 + 300, S).passed
    store.cache_put("cbv", ODD, f"value {ODD}", now + HOUR)
    assert store.cache_get("cbv", ODD, now) is not None
    assert store.cache_get("cbv", "cafe@example.com", now) is None
    store.list_add("blacklist", ODD.upper(), now + HOUR)
    assert store.listed("blacklist", ODD, now)
    assert not store.listed("blacklist", "café@example.com", now)
    store.list_add("whitelist", "d\udcfcsseldorf.example", now + HOUR)
    assert store.listed("whitelist", "x@D\udcfcsseldorf.example", now)
    store.list_remove("blacklist", ODD)
    assert not store.listed("blacklist", ODD, now)
    store.ban_domain("\udcff.example", now + HOUR, f"reason {ODD}")
    assert store.domain_banned("\udcff.example", now)
    store.ban_ip("192.0.2.\udce9", now + HOUR, "junk from the wire")
    assert store.ip_banned("192.0.2.\udce9", now)
    store.list_add("whitelist", "müller@exämple.de", now + HOUR)  # proper UTF-8 text
    assert store.listed("whitelist", "MÜLLER@EXÄMPLE.DE", now)


# --- legacy files -------------------------------------------------------------------------

# --- administration (bms ban|whitelist|blacklist|greylist) ----------------------------------

def test_bans_are_listed_sorted_without_the_expired_and_deleted(store: Store,
                                                                now: float) -> None:
    store.ban_ip("2001:db8::9", math.inf, "manual")
    store.ban_ip("192.0.2.9", now + HOUR, "4 demerits")
    store.ban_ip("192.0.2.10", now + 60, "soon over")
    store.ban_domain("*.Bulk.test", now + DAY, "bulk")
    assert store.bans(now + 120) == [
        BanEntry("domain", "*.bulk.test", now + DAY, "bulk"),
        BanEntry("ip", "192.0.2.9", now + HOUR, "4 demerits"),
        BanEntry("ip", "2001:db8::9", math.inf, "manual")]
    assert store.unban("ip", "2001:db8::9")
    assert not store.unban("ip", "2001:db8::9")  # already gone
    assert store.unban("domain", "*.BULK.test")
    assert not store.ip_banned("2001:db8::9", now)
    assert not store.domain_banned("a.bulk.test", now)
    assert [b.key for b in store.bans(now)] == ["192.0.2.10", "192.0.2.9"]


def test_ban_in_force_names_the_most_specific_ban(store: Store, now: float) -> None:
    store.ban_ip("192.0.2.9", now + HOUR, "4 demerits")
    store.ban_ip("192.0.2.10", now + 60, "soon over")
    store.ban_domain("*.example.test", math.inf, "manual")
    store.ban_domain("*.mx.example.test", now + DAY, "spam run")
    assert store.ban_in_force("ip", "192.0.2.9", now) == BanEntry(
        "ip", "192.0.2.9", now + HOUR, "4 demerits")
    assert store.ban_in_force("ip", "192.0.2.10", now + 120) is None  # expired
    assert store.ban_in_force("ip", "192.0.2.11", now) is None
    assert store.ban_in_force("domain", "A.MX.example.test", now) == BanEntry(
        "domain", "*.mx.example.test", now + DAY, "spam run")
    assert store.ban_in_force("domain", "a.mx.example.test", now + 2 * DAY) == BanEntry(
        "domain", "*.example.test", math.inf, "manual")  # the wider one still holds
    assert store.ban_in_force("domain", "example.test", now) is None


def test_list_entries_per_kind(store: Store, now: float) -> None:
    store.list_add("whitelist", "B@Example.com", math.inf)
    store.list_add("whitelist", "example.org", now + HOUR)
    store.list_add("whitelist", "old@example.net", now + 60)
    store.list_add("blacklist", "spam@example.com", now + HOUR)
    assert store.list_entries("whitelist", now + 120) == [
        ListEntry("whitelist", "b@example.com", math.inf),
        ListEntry("whitelist", "example.org", now + HOUR)]
    assert store.list_entries("blacklist", now) == [
        ListEntry("blacklist", "spam@example.com", now + HOUR)]
    with pytest.raises(ValueError):
        store.list_entries("greylist", now)


GREY_A = ("192.0.2.0/24", "a@example.com", "x@example.org")
GREY_B = ("192.0.2.0/24", "b@example.com", "x@example.org")
GREY_C = ("pass.example", "a@example.com", "y@example.net")


def greylisted(store: Store) -> None:
    for key in (GREY_A, GREY_B, GREY_C):
        assert not store.greylist(key, T0, S).passed


def test_greylist_entries_and_filters(store: Store) -> None:
    greylisted(store)
    store.greylist(GREY_A, T0 + 300, S)  # passes
    assert store.greylist_entries(GreylistMatch()) == [
        GreylistEntry(*GREY_A, T0, T0 + 300, 1), GreylistEntry(*GREY_B, T0, T0, 0),
        GreylistEntry(*GREY_C, T0, T0, 0)]
    assert store.greylist_entries(GreylistMatch())[0].passed

    def chosen(**filters: str) -> list[tuple[str, str, str]]:
        return [(e.origin, e.sender, e.recipient)
                for e in store.greylist_entries(GreylistMatch(**filters))]
    assert chosen(sender="A@example.com") == [GREY_A, GREY_C]
    assert chosen(sender="@example.com", recipient="@example.net") == [GREY_C]
    assert chosen(client="192.0.2.77") == [GREY_A, GREY_B]
    assert chosen(client="Pass.Example") == [GREY_C]
    assert chosen(client="192.0.2.0/24", sender="b@example.com") == [GREY_B]
    assert chosen(recipient="nobody@example.org") == []


def test_greylist_pass_lets_the_next_attempt_through(store: Store) -> None:
    greylisted(store)
    assert store.greylist_pass(GreylistMatch(sender="b@example.com"), T0 + 10, S) == 1
    assert store.greylist(GREY_B, T0 + 11, S) == GreylistVerdict(True, 0.0, 1)
    assert store.greylist(GREY_B, T0 + 12, S) == GreylistVerdict(True, 0.0, 2)
    assert not store.greylist(GREY_A, T0 + 11, S).passed  # not chosen
    assert store.greylist_pass(GreylistMatch(recipient="nobody@x"), T0 + 10, S) == 0
    assert store.greylist_pass(GreylistMatch(sender="b@example.com"), T0 + DAY, S) == 1
    assert store.greylist(GREY_B, T0 + DAY, S) == GreylistVerdict(True, 0.0, 3)  # kept
    assert store.greylist_pass(GreylistMatch(sender="a@example.com"), T0 + 20, S) == 2
    late = T0 + 20 + 6 * HOUR + 1  # a passed-by-hand retry later than expire: afresh
    assert store.greylist(GREY_A, late, S) == GreylistVerdict(False, 300.0, 0)


def test_greylist_forget_starts_afresh(store: Store) -> None:
    greylisted(store)
    store.greylist(GREY_A, T0 + 300, S)
    assert store.greylist_forget(GreylistMatch(client="192.0.2.1")) == 2
    assert [e.origin for e in store.greylist_entries(GreylistMatch())] == ["pass.example"]
    assert store.greylist(GREY_A, T0 + 400, S) == GreylistVerdict(False, 300.0, 0)
    assert store.greylist_forget(GreylistMatch()) == 2
    assert store.greylist_entries(GreylistMatch()) == []


def stamp(t: float, zone: str = "UTC") -> str:
    """``2024Jan05 10:00:01 UTC`` as the original wrote (without the locale)."""
    d = datetime.fromtimestamp(t, timezone.utc)
    return f"{d.year}{MONTHS[d.month - 1]}{d.day:02d} {d:%H:%M:%S} {zone}"


def write_legacy_files(directory: Path, now: float) -> None:
    (directory / "banned_ips").write_text("192.0.2.1\n2001:DB8:0::1\n# a comment\n\nnot-an-ip\n")
    (directory / "banned_ips.1").write_text("192.0.2.1\n198.51.100.7\n")
    with gzip.open(directory / "banned_ips.2.gz", "wt") as f:
        f.write("203.0.113.9\n")
    (directory / "banned_domains").write_text("spam.example\n*.bulk.test\n")
    (directory / "auto_whitelist.log").write_bytes(
        f"Alice@Example.com {stamp(now - 10 * DAY)}\n"
        f"old@example.com {stamp(now - 61 * DAY)}\n"
        "partner.example\n"
        "caf\xe9@example.com\n".encode("latin-1"))
    (directory / "blacklist.log").write_text(
        f"bad@spam.example {stamp(now - DAY)}\nbroken 2024Foo05 10:00:01 UTC\n")


def test_legacy_import_end_to_end(store: Store, now: float, tmp_path: Path) -> None:
    legacy = tmp_path / "log"
    legacy.mkdir()
    write_legacy_files(legacy, now)
    got = import_legacy(store, str(legacy), now, ban_days=7)
    assert (got.banned_ips, got.banned_domains, got.whitelist, got.blacklist, got.expired) == (
        4, 2, 3, 1, 1)
    assert len(got.files) == 6 and not got.already_done
    assert [w.split(": ")[0] for w in got.warnings] == [
        f"{legacy}/banned_ips:5", f"{legacy}/blacklist.log:2"]

    for ip in ("192.0.2.1", "2001:db8::1", "198.51.100.7", "203.0.113.9"):
        assert store.ip_banned(ip, now + 7 * DAY - 1), ip
        assert not store.ip_banned(ip, now + 7 * DAY), ip
    assert store.domain_banned("spam.example", now)
    assert store.domain_banned("mx.bulk.test", now)
    assert store.listed("whitelist", "alice@example.com", now + 50 * DAY - 1)
    assert not store.listed("whitelist", "alice@example.com", now + 50 * DAY + 1)
    assert not store.listed("whitelist", "old@example.com", now)
    assert store.listed("whitelist", "anyone@partner.example", now + 10_000 * DAY)
    assert store.listed("whitelist", "CAF\udce9@example.com", now + 10_000 * DAY)
    assert store.listed("blacklist", "bad@spam.example", now + 29 * DAY - 1)
    assert not store.listed("blacklist", "bad@spam.example", now + 29 * DAY + 1)

    store.list_remove("whitelist", "partner.example")
    again = import_legacy(store, str(legacy), now + 60, ban_days=7)
    assert again.already_done and again.files == () and again.warnings == ()
    assert not store.listed("whitelist", "anyone@partner.example", now)


def test_legacy_import_without_files_records_nothing(store: Store, now: float,
                                                      tmp_path: Path) -> None:
    assert import_legacy(store, str(tmp_path / "missing"), now, 7).files == ()
    (tmp_path / "log").mkdir()
    assert import_legacy(store, str(tmp_path / "log"), now, 7).files == ()
    (tmp_path / "log" / "banned_ips").write_text("192.0.2.77\n")
    first = import_legacy(store, str(tmp_path / "log"), now, 7)
    assert first.banned_ips == 1 and not first.already_done
    assert store.ip_banned("192.0.2.77", now)


# --- SQLite only --------------------------------------------------------------------------

OLD_SCHEMA = """
CREATE TABLE bans (kind TEXT NOT NULL, key TEXT NOT NULL, until REAL NOT NULL,
                   reason TEXT NOT NULL DEFAULT '', PRIMARY KEY (kind, key));
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE cache (kind TEXT NOT NULL, key TEXT NOT NULL, until REAL NOT NULL,
                    value TEXT NOT NULL, PRIMARY KEY (kind, key));
INSERT INTO bans VALUES ('ip', '192.0.2.1', 9e12, 'old');
INSERT INTO counters VALUES ('connid', 42);
"""


def test_sqlite_file_of_an_older_version_gains_the_lists(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    db.close()
    store = SqliteStore(path)
    assert store.ip_banned("192.0.2.1", T0)
    assert store.reserve("connid", 1) == 42
    store.list_add("whitelist", "alice@example.com", math.inf)
    assert store.listed("whitelist", "alice@example.com", T0)


def test_sqlite_purge_counts_and_deletes_rows(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    store.ban_ip("192.0.2.1", T0 + 10, "x")
    store.ban_domain("spam.example", T0 + 10, "x")
    store.cache_put("cbv", "a@b", "v", T0 + 10)
    store.list_add("whitelist", "a@b.example", T0 + 10)
    store.list_add("blacklist", "c@d.example", T0 + 20)
    store.list_add("blacklist", "manual.example", math.inf)
    assert store.purge(T0 + 10) == 4
    assert store.purge(T0 + 10) == 0
    assert store.purge(T0 + 1e9) == 1
    with sqlite3.connect(store.path) as db:
        rows = db.execute("SELECT kind, entry FROM lists").fetchall()
    db.close()
    assert rows == [("blacklist", "manual.example")]
