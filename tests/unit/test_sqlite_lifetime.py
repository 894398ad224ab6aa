"""SQLite connections of the state store live no longer than their threads
or the next thread takes them over (issue 13 item 8: a worker held ~190 fds
after 10^5 sessions)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from bmslib.state.sqlite import SqliteStore


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_connections_of_ended_threads_are_closed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.ban_ip("192.0.2.1", 1e12, "test")  # this thread's connection
    before = _fds()
    for _ in range(5):
        threads = [threading.Thread(target=store.ip_banned, args=("192.0.2.1", 0.0))
                   for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert store.ip_banned("192.0.2.1", 0.0)
    # Each batch of 20 took the connections the one before left.
    assert store._open_count() <= 21
    assert _fds() <= before + 3 * 20  # WAL: a connection holds the db, -wal and -shm
    for _ in range(5):  # one thread at a time: one connection, reused
        t = threading.Thread(target=store.ip_banned, args=("192.0.2.1", 0.0))
        t.start()
        t.join()
    assert store._open_count() <= 21


def test_live_threads_keep_their_connection(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    go = threading.Event()
    ready = threading.Barrier(4)

    def work() -> None:
        store.ip_banned("192.0.2.1", 0.0)
        ready.wait()
        go.wait()
        assert not store.ip_banned("192.0.2.1", 0.0)  # still usable

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    ready.wait()
    assert store._open_count() == 3
    go.set()
    for t in threads:
        t.join()
