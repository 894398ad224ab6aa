"""The embedded state store, connection ids and log escaping."""

from __future__ import annotations

import logging
import multiprocessing
import os
from pathlib import Path

import pytest

from bmslib.log import escape, setup_logging
from bmslib.state import SqliteStore
from Milter import connid


def test_bans_expire_and_domain_wildcards(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "state.db")
    s.ban_ip("192.0.2.1", until=200, reason="demerits")
    s.ban_ip("192.0.2.1", until=150, reason="again")  # never shortens a ban
    assert s.ip_banned("192.0.2.1", now=199) and not s.ip_banned("192.0.2.1", now=200)
    s.ban_domain("*.foo.bar", until=1e12, reason="x")
    s.ban_domain("Baz.Bar", until=1e12, reason="x")
    got = {d: s.domain_banned(d, 0) for d in
           ("bif.foo.bar", "a.b.foo.bar", "foo.bar", "bif.foo.com", "baz.bar", "x.baz.bar")}
    assert got == {"bif.foo.bar": True, "a.b.foo.bar": True, "foo.bar": False,
                   "bif.foo.com": False, "baz.bar": True, "x.baz.bar": False}
    assert s.purge(now=300) == 1


def _reserve(path: str, q: multiprocessing.Queue[int]) -> None:
    store = SqliteStore(path)
    for _ in range(20):
        q.put(store.reserve("connid", 10))


def test_counter_blocks_never_overlap_across_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    SqliteStore(path)
    q: multiprocessing.Queue[int] = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_reserve, args=(path, q)) for _ in range(3)]
    for p in procs:
        p.start()
    firsts = [q.get(timeout=30) for _ in range(60)]
    for p in procs:
        p.join(30)
    assert sorted(firsts) == list(range(1, 601, 10))
    # And across a restart: a new store object continues after the last block.
    assert SqliteStore(path).reserve("connid", 10) == 601


def test_connection_ids_from_an_allocator_are_unique_after_fork(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    connid.set_allocator(lambda n: store.reserve("connid", n))
    try:
        parent = [connid.new_id() for _ in range(3)]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, connid.new_id().encode())
            os._exit(0)
        os.waitpid(pid, 0)
        child = os.read(r, 100).decode()
        assert parent == ["1", "2", "3"]
        assert int(child) > connid.BLOCK  # a block of its own, not the parent's
        assert connid.new_id() == "4"
    finally:
        connid.set_allocator(None)


@pytest.mark.parametrize(("raw", "want"), [
    ("plain text", "plain text"),
    ("evil\nREJECT: forged", "evil\\nREJECT: forged"),
    ("cr\rlf", "cr\\rlf"),
    ("\x1b[31mred", "\\x1b[31mred"),
    ("caf\udce9", "caf\\udce9"),
    ("uni\u2028sep", "uni\\u2028sep"),
    ("Grüße", "Grüße"),
])
def test_escape(raw: str, want: str) -> None:
    assert escape(raw) == want


def test_escape_cuts_long_text() -> None:
    assert escape("x" * 600, limit=10) == "x" * 10 + "...(590 more)"


def test_log_format(tmp_path: Path) -> None:
    handler = setup_logging(str(tmp_path))
    try:
        token = connid.current.set("12430")
        logging.getLogger("bms").info("REJECT: %s", escape("zombie\nPC"))
        connid.current.reset(token)
        handler.flush()
        line = (tmp_path / "milter.log").read_text().splitlines()[-1]
        assert line.endswith(" [12430] REJECT: zombie\\nPC")
        assert len(line.split(" ")[0]) == 9  # 2026Nov24
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def now(self) -> float:
        return self.t


def test_cbv_results_persist_in_the_store_until_they_expire(tmp_path: Path) -> None:
    from bmslib.policy.cbv import CbvResult, CbvStatus
    from bmslib.state.cbvcache import StoreCbvCache

    clock = _Clock(1000.0)
    store = SqliteStore(tmp_path / "state.db")
    cache = StoreCbvCache(store, clock)
    refused = CbvResult(CbvStatus.REFUSED, 550, "5.1.1 no such user", mx="mx [192.0.2.1]",
                        step="RCPT", cached=True)
    cache.put("a@b.example", refused, ttl=60)
    cache.put("c@d.example", refused, ttl=0)  # not cached at all
    # Another process (worker, MX host) opening the same store sees it.
    other = StoreCbvCache(SqliteStore(tmp_path / "state.db"), clock)
    got = other.get("a@b.example")
    assert got is not None and got.status is CbvStatus.REFUSED
    assert (got.code, got.text, got.mx, got.step) == (550, "5.1.1 no such user",
                                                      "mx [192.0.2.1]", "RCPT")
    assert other.get("c@d.example") is None
    clock.t = 1060.0
    assert other.get("a@b.example") is None
    assert store.purge(now=clock.t) == 1
    store.cache_put("cbv", "x@y.example", "{not json", until=2000.0)  # another version
    assert cache.get("x@y.example") is None


def test_a_store_opened_before_fork_works_in_the_child(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    store.ban_ip("192.0.2.9", until=1e12, reason="x")  # the parent's connection is open
    pid = os.fork()
    if pid == 0:  # child: must open its own connection
        ok = store.ip_banned("192.0.2.9", 0) and store.reserve("n", 5) == 1
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.reserve("n", 5) == 6 and store.ip_banned("192.0.2.9", 0)


def test_sqlite_store_takes_8bit_text_from_the_wire(tmp_path: Path) -> None:
    """A surrogate-escaped 8-bit address (as pymilter hands it over) is stored
    and found again, not a UnicodeEncodeError into TEMPFAIL."""
    from bmslib.state.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "s.sqlite")
    key = "caf\udce9@example.test"
    store.cache_put("cbv", key, "v\udcff", 200.0)
    assert store.cache_get("cbv", key, 100.0) == "v\\xff"
    store.ban_domain("ex\udce9.test", 200.0, "r\udce9")
    assert store.domain_banned("ex\udce9.test", 100.0)
    store.ban_ip("1.2.3.4\udcff", 200.0, "x")
    assert store.ip_banned("1.2.3.4\udcff", 100.0)
