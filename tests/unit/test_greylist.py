"""Greylisting: the pure rules, the key, the replies, and the SQLite store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bmslib.policy.decision import CONTINUE, Action
from bmslib.policy.greylist import (
    GreylistRecord,
    GreylistSettings,
    GreylistVerdict,
    StoreUnavailable,
    decide,
    decide_unavailable,
    expired,
    greylist_key,
    greylist_step,
    mask_ip,
)
from bmslib.state.sqlite import SqliteStore

T0 = 1_700_000_000.0
S = GreylistSettings()  # 5 min, 6 h, 36 d
KEY = ("192.0.2.0/24", "a@example.com", "b@example.org")


class Triplet:
    """Attempts of one triplet through greylist_step with a fake clock."""

    def __init__(self, settings: GreylistSettings = S) -> None:
        self.settings = settings
        self.record: GreylistRecord | None = None

    def attempt(self, at: float) -> GreylistVerdict:
        self.record, verdict = greylist_step(self.record, T0 + at, self.settings)
        return verdict


# --- the rules --------------------------------------------------------------------------

def test_new_triplet_is_greylisted_for_time() -> None:
    t = Triplet()
    assert t.attempt(0) == GreylistVerdict(False, 300.0, 0)
    assert t.record == GreylistRecord(T0, T0, 0)


def test_early_retry_is_greylisted_and_keeps_firstseen() -> None:
    t = Triplet()
    t.attempt(0)
    assert t.attempt(120) == GreylistVerdict(False, 180.0, 0)
    assert t.record == GreylistRecord(T0, T0 + 120, 0)


def test_retry_after_time_passes_and_later_ones_count() -> None:
    t = Triplet()
    t.attempt(0)
    assert t.attempt(300) == GreylistVerdict(True, 0.0, 1)
    assert t.attempt(10 * 86400) == GreylistVerdict(True, 0.0, 2)  # count > 0: expire no more
    assert t.record == GreylistRecord(T0, T0 + 10 * 86400, 2)


def test_first_retry_inside_expire_passes() -> None:
    t = Triplet()
    t.attempt(0)
    assert t.attempt(300 + 6 * 3600).passed


def test_late_first_retry_starts_afresh() -> None:
    t = Triplet()
    t.attempt(0)
    late = 300 + 6 * 3600 + 1
    assert t.attempt(late) == GreylistVerdict(False, 300.0, 0)
    assert t.record == GreylistRecord(T0 + late, T0 + late, 0)
    assert t.attempt(late + 300).passed


def test_record_unseen_longer_than_retain_starts_afresh() -> None:
    t = Triplet()
    t.attempt(0)
    t.attempt(300)
    assert t.attempt(300 + 36 * 86400).passed  # exactly retain: still kept
    gone = 300 + 2 * 36 * 86400 + 1
    assert t.attempt(gone) == GreylistVerdict(False, 300.0, 0)


def test_time_zero_greylists_first_attempt_and_passes_any_retry() -> None:
    t = Triplet(GreylistSettings(time_minutes=0))
    assert t.attempt(0) == GreylistVerdict(False, 0.0, 0)
    assert t.attempt(0) == GreylistVerdict(True, 0.0, 1)


def test_expired_matches_what_the_next_attempt_would_reset() -> None:
    fresh = GreylistRecord(T0, T0, 0)
    assert not expired(fresh, T0 + 300 + 6 * 3600, S)
    assert expired(fresh, T0 + 300 + 6 * 3600 + 1, S)
    passed = GreylistRecord(T0, T0 + 300, 1)
    assert not expired(passed, T0 + 300 + 36 * 86400, S)
    assert expired(passed, T0 + 301 + 36 * 86400, S)


# --- the key ----------------------------------------------------------------------------

@pytest.mark.parametrize(("ip", "masked"), [
    ("192.0.2.77", "192.0.2.0/24"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("::ffff:198.51.100.9", "198.51.100.0/24"),
    ("[192.0.2.1]", "192.0.2.0/24"),
    ("IPv6:2001:db8::1", "2001:db8::/64"),
    ("not-an-ip", "not-an-ip"),
])
def test_mask_ip(ip: str, masked: str) -> None:
    assert mask_ip(ip) == masked


def test_key_prefers_spf_domain_and_lowercases() -> None:
    assert greylist_key("192.0.2.7", "Example.COM", "A@Example.com", "B@X.org") == (
        "example.com", "a@example.com", "b@x.org")
    assert greylist_key("192.0.2.7", None, "a@b", "c@d") == ("192.0.2.0/24", "a@b", "c@d")
    assert greylist_key("192.0.2.7", "", "a@b", "c@d")[0] == "192.0.2.0/24"


# --- the replies ------------------------------------------------------------------------

@pytest.mark.parametrize(("retry_after", "text"), [
    (300.0, "Greylisted: please retry in 5 minutes."),
    (181.0, "Greylisted: please retry in 4 minutes."),
    (0.5, "Greylisted: please retry in 1 minute."),
    (0.0, "Greylisted: please retry now."),
])
def test_decide_greylisted(retry_after: float, text: str) -> None:
    d = decide(GreylistVerdict(False, retry_after, 0), KEY)
    assert (d.action, d.code, d.xcode, d.tag, d.lines) == (
        Action.TEMPFAIL, "451", "4.7.1", "greylist", (text,))
    assert d.log == "greylist 192.0.2.0/24 a@example.com b@example.org"
    assert not d.delay


def test_decide_passed_continues() -> None:
    assert decide(GreylistVerdict(True, 0.0, 3)) is CONTINUE


def test_store_unavailable_tempfails() -> None:
    d = decide_unavailable(StoreUnavailable("redis redis://h:6379/0: Connection refused"))
    assert (d.action, d.code, d.xcode, d.lines) == (
        Action.TEMPFAIL, "451", "4.7.1", ("Greylisting is unavailable; please retry later.",))
    assert "Connection refused" in d.log


# --- the SQLite store -------------------------------------------------------------------

@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "state.db")


def test_sqlite_follows_the_rules(store: SqliteStore) -> None:
    assert store.greylist(KEY, T0, S) == GreylistVerdict(False, 300.0, 0)
    assert store.greylist(KEY, T0 + 60, S) == GreylistVerdict(False, 240.0, 0)
    assert store.greylist(KEY, T0 + 300, S) == GreylistVerdict(True, 0.0, 1)
    other = (KEY[0], KEY[1], "c@example.org")
    assert not store.greylist(other, T0 + 300, S).passed
    assert store.greylist(KEY, T0 + 400, S) == GreylistVerdict(True, 0.0, 2)


def test_sqlite_record_survives_a_new_store_object(tmp_path: Path) -> None:
    SqliteStore(tmp_path / "s.db").greylist(KEY, T0, S)
    assert SqliteStore(tmp_path / "s.db").greylist(KEY, T0 + 300, S).passed


def test_sqlite_purge_removes_expired_records(store: SqliteStore) -> None:
    passed = ("192.0.2.0/24", "a@x", "old@y")
    store.greylist(passed, T0, S)
    store.greylist(passed, T0 + 300, S)
    never_retried = ("192.0.2.0/24", "a@x", "new@y")
    store.greylist(never_retried, T0, S)
    assert store.purge_greylist(T0 + 301, S) == 0
    assert store.purge_greylist(T0 + 300 + 6 * 3600 + 1, S) == 1
    assert store.greylist(passed, T0 + 1000, S).passed
    assert store.purge_greylist(T0 + 1000 + 36 * 86400 + 1, S) == 1
    assert not store.greylist(passed, T0 + 1001 + 36 * 86400, S).passed


def test_sqlite_forked_workers_share_the_table(store: SqliteStore) -> None:
    store.greylist(KEY, T0, S)  # the parent's connection exists before fork()
    pids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                for _ in range(20):
                    store.greylist(KEY, T0 + 300, S)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        assert os.waitpid(pid, 0)[1] == 0
    assert store.greylist(KEY, T0 + 301, S).count == 41
