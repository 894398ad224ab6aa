"""The Redis state store against a real redis-server, with the same behaviour
suite as the SQLite store (one test body, parametrized over both), plus what
only Redis has: several store objects sharing one server (the cluster case),
and a server that goes away and comes back."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from testbed.redisd import RedisServer, require_redis
from testbed.redisd import redis_server as redis_server  # the session fixture

from Milter.interfaces import BanStore
from Milter.policy.greylist import (
    GreylistSettings,
    GreylistStore,
    GreylistVerdict,
    StoreUnavailable,
    decide_unavailable,
)
from Milter.state.cbvcache import CacheStore
from Milter.state.redis import RedisStore, grey_key, public_url
from Milter.state.sqlite import SqliteStore

S = GreylistSettings()
KEY = ("192.0.2.0/24", "a@example.com", "b@example.org")
Store = SqliteStore | RedisStore


class Records(logging.Handler):
    """The messages logged on logger ``bms`` while installed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def bms_log() -> Iterator[Records]:
    records = Records()
    logger = logging.getLogger("bms")
    logger.addHandler(records)
    try:
        yield records
    finally:
        logger.removeHandler(records)


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server, emptied for this test."""
    redis.Redis.from_url(redis_server.url).flushdb()
    return redis_server.url


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        yield SqliteStore(tmp_path / "state.db")
        return
    s = RedisStore(request.getfixturevalue("redis_url"))
    yield s
    s.close()


# --- the shared behaviour suite -----------------------------------------------------------

def test_greylist_rules(store: Store) -> None:
    t0 = 1_700_000_000.0
    assert store.greylist(KEY, t0, S) == GreylistVerdict(False, 300.0, 0)
    assert store.greylist(KEY, t0 + 60.5, S) == GreylistVerdict(False, 239.5, 0)
    assert store.greylist(KEY, t0 + 300, S) == GreylistVerdict(True, 0.0, 1)
    assert store.greylist(KEY, t0 + 10 * 86400, S) == GreylistVerdict(True, 0.0, 2)
    gone = t0 + 10 * 86400 + 36 * 86400 + 1
    assert store.greylist(KEY, gone, S) == GreylistVerdict(False, 300.0, 0)


def test_greylist_late_first_retry_and_time_zero(store: Store) -> None:
    t0 = 1_700_000_000.0
    store.greylist(KEY, t0, S)
    late = t0 + 300 + 6 * 3600 + 1
    assert store.greylist(KEY, late, S) == GreylistVerdict(False, 300.0, 0)
    assert store.greylist(KEY, late + 300, S).passed
    zero = GreylistSettings(time_minutes=0)
    other = (KEY[0], KEY[1], "z@example.org")
    assert store.greylist(other, t0, zero) == GreylistVerdict(False, 0.0, 0)
    assert store.greylist(other, t0, zero) == GreylistVerdict(True, 0.0, 1)


def test_bans_expire(store: Store) -> None:
    now = time.time()
    store.ban_ip("192.0.2.1", now + 3600, "demerits")
    assert store.ip_banned("192.0.2.1", now)
    assert not store.ip_banned("192.0.2.2", now)
    assert not store.ip_banned("192.0.2.1", now + 3601)
    store.ban_ip("192.0.2.1", now + 60, "shorter")  # never shortens a ban
    assert store.ip_banned("192.0.2.1", now + 120)


def test_domain_bans_match_parents_only_with_wildcard(store: Store) -> None:
    now = time.time()
    store.ban_domain("Spam.Example", now + 3600, "spam")
    store.ban_domain("*.bulk.test", now + 3600, "spam")
    assert store.domain_banned("spam.example", now)
    assert not store.domain_banned("a.spam.example", now)
    assert store.domain_banned("x.y.BULK.test", now)
    assert not store.domain_banned("bulk.test", now)
    assert not store.domain_banned("spam.example", now + 3601)


def test_cache(store: Store) -> None:
    now = time.time()
    assert store.cache_get("cbv", "a@b", now) is None
    store.cache_put("cbv", "a@b", '{"x": 1}', now + 60)
    assert store.cache_get("cbv", "a@b", now) == '{"x": 1}'
    assert store.cache_get("dsn", "a@b", now) is None
    assert store.cache_get("cbv", "a@b", now + 61) is None
    store.cache_put("cbv", "a@b", "new", now + 120)
    assert store.cache_get("cbv", "a@b", now + 61) == "new"


def test_reserve_hands_out_blocks(store: Store) -> None:
    assert store.reserve("connid", 100) == 1
    assert store.reserve("connid", 100) == 101
    assert store.reserve("other", 5) == 1
    assert store.reserve("connid", 1) == 201


def test_concurrent_attempts_are_never_lost(store: Store) -> None:
    t0 = 1_700_000_000.0
    store.greylist(KEY, t0, S)
    counts: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            count = store.greylist(KEY, t0 + 300, S).count
            with lock:
                counts.append(count)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(counts) == list(range(1, 76))


def test_eight_bit_text_round_trips(store: Store) -> None:
    now = time.time()
    odd = "caf\udce9@example.com"  # a latin-1 byte kept by surrogateescape
    key = ("192.0.2.0/24", odd, "b@example.org")
    assert not store.greylist(key, now, S).passed
    assert store.greylist(key, now + 300, S).passed


# --- Redis only ---------------------------------------------------------------------------

def test_redis_cache_keeps_eight_bit_text(redis_url: str) -> None:
    store, now, odd = RedisStore(redis_url), time.time(), "caf\udce9@example.com"
    store.cache_put("cbv", odd, odd, now + 60)
    assert store.cache_get("cbv", odd, now) == odd


def test_two_stores_on_one_server_share_state(redis_url: str) -> None:
    a, b = RedisStore(redis_url), RedisStore(redis_url)
    now = time.time()
    assert not a.greylist(KEY, now, S).passed
    assert b.greylist(KEY, now + 300, S) == GreylistVerdict(True, 0.0, 1)
    assert a.greylist(KEY, now + 301, S).count == 2
    a.ban_ip("192.0.2.9", now + 3600, "x")
    b.ban_domain("*.spam.test", now + 3600, "x")
    assert b.ip_banned("192.0.2.9", now)
    assert a.domain_banned("m.spam.test", now)
    assert a.reserve("connid", 10) == 1
    assert b.reserve("connid", 10) == 11
    assert a.purge_greylist(now, S) == 0


def test_greylist_record_has_ttl_retain(redis_url: str) -> None:
    RedisStore(redis_url).greylist(KEY, time.time(), S)
    ttl = redis.Redis.from_url(redis_url).pttl(grey_key(KEY))
    assert S.retain * 1000 - 5000 < ttl <= S.retain * 1000


def test_both_stores_satisfy_the_protocols(tmp_path: Path) -> None:
    for store in (SqliteStore(tmp_path / "s.db"), RedisStore("redis://127.0.0.1:1/0")):
        bans: BanStore = store
        grey: GreylistStore = store
        cache: CacheStore = store
        assert {id(bans), id(grey), id(cache)} == {id(store)}


def test_path_hides_password() -> None:
    assert RedisStore("redis://:secret@127.0.0.1:1/0").path == "redis://127.0.0.1:1/0"
    assert public_url("redis://u:pw@[::1]:6379/2") == "redis://u@[::1]:6379/2"
    assert public_url("redis://h:6379/0") == "redis://h:6379/0"


def test_server_down_then_back(bms_log: Records) -> None:
    require_redis()
    with RedisServer() as server:
        store = RedisStore(server.url, socket_timeout=0.5, clock_log_interval=60)
        assert not store.greylist(KEY, time.time(), S).passed
        server.stop()
        for _ in range(3):
            with pytest.raises(StoreUnavailable) as info:
                store.greylist(KEY, time.time(), S)
            assert "\n" not in str(info.value)
        with pytest.raises(StoreUnavailable):
            store.ip_banned("192.0.2.1", time.time())
        down = [m for m in bms_log.messages if m.startswith("STATE: redis unavailable: ")]
        assert len(down) == 1, bms_log.messages
        assert decide_unavailable(info.value).code == "451"
        server.start()
        assert not store.greylist(KEY, time.time(), S).passed  # the data went with it
        assert store.greylist(KEY, time.time(), S).retry_after > 0  # script reloaded
        assert bms_log.messages.count("STATE: redis back") == 1
        assert len(bms_log.messages) == 2


def test_hung_server_times_out(bms_log: Records) -> None:
    require_redis()
    with RedisServer() as server:
        store = RedisStore(server.url, socket_timeout=0.3)
        assert store.reserve("connid", 1) == 1
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                store.reserve("connid", 1)
            assert time.monotonic() - started < 2
        finally:
            server.proc.send_signal(signal.SIGCONT)
        assert store.reserve("connid", 1) in (2, 3)  # the timed-out INCRBY may have run
        assert bms_log.messages[-1] == "STATE: redis back"


def test_unavailable_logged_again_after_the_interval(bms_log: Records) -> None:
    store = RedisStore("redis://127.0.0.1:1/0", socket_timeout=0.5, clock_log_interval=0)
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            store.reserve("connid", 1)
    assert len(bms_log.messages) == 2
    assert all(m.startswith("STATE: redis unavailable: redis://127.0.0.1:1/0: ")
               for m in bms_log.messages)
