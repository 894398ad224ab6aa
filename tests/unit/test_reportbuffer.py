"""``bmslib.state.reportbuffer``: DMARC report counts wait in memory and reach
the store when due (time, rows), when flushed (reload, stop), never twice and,
when the store fails, as one warning instead of an error for the message."""

from __future__ import annotations

import logging
import sqlite3
import threading

import pytest
from fakes import FakeClock, FakeStore

from bmslib.state.reportbuffer import ReportBuffer


def test_counts_wait_until_the_interval_has_passed() -> None:
    store, clock = FakeStore(), FakeClock()
    reports = ReportBuffer(store, clock, seconds=60, rows=100)
    for _ in range(3):
        reports.count(20000, "a")
    reports.count(20000, "b")
    clock.t += 59
    reports.count(20001, "a")
    assert store.reports == {} and reports.pending() == 5
    clock.t += 1  # due: the message that finds it so writes everything
    reports.count(20001, "a")
    assert store.reports == {(20000, "a"): 3, (20000, "b"): 1, (20001, "a"): 2}
    assert reports.pending() == 0
    reports.count(20001, "a")  # the next interval starts from that write
    clock.t += 59
    reports.count(20001, "a")
    assert store.reports[(20001, "a")] == 2 and reports.pending() == 2


def test_as_many_rows_as_the_limit_are_written_at_once() -> None:
    store, clock = FakeStore(), FakeClock()
    reports = ReportBuffer(store, clock, seconds=60, rows=3)
    reports.count(1, "a")
    reports.count(1, "a")
    reports.count(1, "b")
    assert store.reports == {}
    reports.count(1, "c")  # the third different row
    assert store.reports == {(1, "a"): 2, (1, "b"): 1, (1, "c"): 1}


def test_flush_writes_what_waits_and_nothing_twice() -> None:
    store, clock = FakeStore(), FakeClock()
    reports = ReportBuffer(store, clock)
    reports.count(7, "k")
    reports.count(7, "k")
    reports.flush()
    reports.flush()
    assert store.reports == {(7, "k"): 2}


def test_counts_from_threads_are_never_lost() -> None:
    store, clock = FakeStore(), FakeClock()
    reports = ReportBuffer(store, clock, seconds=60, rows=5)

    def work(i: int) -> None:
        for n in range(500):
            reports.count(1, f"k{(i + n) % 7}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reports.flush()
    assert sum(store.reports.values()) == 2000


@pytest.mark.parametrize("failure", ["down", "sqlite"])
def test_a_store_that_fails_loses_the_counts_with_one_warning(
        failure: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    store, clock = FakeStore(), FakeClock()
    reports = ReportBuffer(store, clock)
    reports.count(1, "a")
    reports.count(1, "b")
    reports.count(1, "b")
    if failure == "down":
        store.down = True
    else:
        def locked(day: int, key: str, count: int = 1) -> None:
            raise sqlite3.OperationalError("database is locked")
        monkeypatch.setattr(store, "report_count", locked)
    with caplog.at_level(logging.WARNING, logger="bms"):
        reports.flush()
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "DMARC report counts: 3 lost"]
    assert store.reports == {} and reports.pending() == 0
