"""What only the Redis state store has, against a real redis-server: the
key layout and TTLs, several store objects sharing one server (the cluster
case), a server that goes away and comes back, and a URL whose password
must not reach the log.  The behaviour both stores share is the contract
suite in test_store_contract.py."""

from __future__ import annotations

import logging
import math
import signal
import time
from collections.abc import Iterator

import pytest
import redis
from testbed.redisd import RedisServer, require_redis
from testbed.redisd import redis_server as redis_server  # the session fixture

from bmslib.policy.greylist import (
    GreylistSettings,
    GreylistVerdict,
    StoreUnavailable,
    decide_unavailable,
)
from bmslib.state.redis import RedisStore, grey_key, public_url

S = GreylistSettings()
KEY = ("192.0.2.0/24", "a@example.com", "b@example.org")


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
    """The session server's database 0, emptied for this test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.close()
    return redis_server.url


def raw(redis_url: str) -> redis.Redis:
    """A plain client on the test's database (bytes, no decoding)."""
    return redis.Redis.from_url(redis_url)


def test_eight_bit_text_is_stored_as_its_bytes(redis_url: str) -> None:
    store, now, odd = RedisStore(redis_url), time.time(), "caf\udce9@example.com"
    store.cache_put("cbv", odd, odd, now + 60)
    assert store.cache_get("cbv", odd, now) == odd
    store.list_add("blacklist", odd, now + 60)
    client = raw(redis_url)
    assert client.hget(b"bms:cache:cbv:caf\xe9@example.com", "value") == b"caf\xe9@example.com"
    assert client.exists(b"bms:list:blacklist:caf\xe9@example.com")


def test_list_keys_carry_their_expiry_and_a_ttl(redis_url: str) -> None:
    store, client, now = RedisStore(redis_url), raw(redis_url), time.time()
    store.list_add("whitelist", "Alice@Example.com", now + 3600)
    name = "bms:list:whitelist:alice@example.com"
    assert float(client.hget(name, "until") or 0) == now + 3600
    assert 0 < client.pttl(name) <= 3600 * 1000
    store.list_add("whitelist", "alice@example.com", math.inf)  # manual: no TTL
    assert client.hget(name, "until") == b"inf"
    assert client.pttl(name) == -1
    store.list_add("whitelist", "alice@example.com", now + 60)  # stays manual
    assert client.pttl(name) == -1
    store.list_remove("whitelist", "ALICE@example.com")
    assert not client.exists(name)


def test_bans_and_cache_without_expiry_have_no_ttl(redis_url: str) -> None:
    store, client, now = RedisStore(redis_url), raw(redis_url), time.time()
    store.ban_ip("192.0.2.1", now + 60, "demerits")
    assert 0 < client.pttl("bms:ban:ip:192.0.2.1") <= 60_000
    assert client.hget("bms:ban:ip:192.0.2.1", "reason") == b"demerits"
    store.ban_ip("192.0.2.1", math.inf, "manual")
    assert client.pttl("bms:ban:ip:192.0.2.1") == -1
    assert client.hget("bms:ban:ip:192.0.2.1", "reason") == b"manual"
    store.cache_put("legacy-import", "done", "yes", math.inf)
    assert client.pttl("bms:cache:legacy-import:done") == -1
    store.cache_put("legacy-import", "done", "again", now + 60)
    assert 0 < client.pttl("bms:cache:legacy-import:done") <= 60_000


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
    a.list_add("whitelist", "partner.example", now + 3600)
    assert b.listed("whitelist", "x@partner.example", now)
    b.list_remove("whitelist", "partner.example")
    assert not a.listed("whitelist", "x@partner.example", now)
    assert a.reserve("connid", 10) == 1
    assert b.reserve("connid", 10) == 11
    assert a.purge_greylist(now, S) == 0
    assert a.purge(now) == 0


def test_greylist_record_has_ttl_retain(redis_url: str) -> None:
    RedisStore(redis_url).greylist(KEY, time.time(), S)
    ttl = raw(redis_url).pttl(grey_key(KEY))
    assert S.retain * 1000 - 5000 < ttl <= S.retain * 1000


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


def test_password_never_reaches_log_or_errors(bms_log: Records) -> None:
    require_redis()
    with RedisServer() as server:
        admin = redis.Redis.from_url(server.url)
        admin.config_set("requirepass", "right-secret")
        admin.close()
        url = server.url.replace("redis://", "redis://:wrong-secret@")
        store = RedisStore(url, socket_timeout=0.5)
        with pytest.raises(StoreUnavailable) as info:
            store.listed("whitelist", "a@example.com", time.time())
        good = RedisStore(server.url.replace("redis://", "redis://:right-secret@"))
        good.list_add("whitelist", "a@example.com", math.inf)
        assert good.listed("whitelist", "a@example.com", time.time())
    assert "secret" not in str(info.value) and "secret" not in store.path
    assert bms_log.messages and not any("secret" in m for m in bms_log.messages)
