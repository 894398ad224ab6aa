"""Milter.cache, Milter.plock, Milter.greylist and Milter.greysql."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import pytest

from Milter import greylist, greysql
from Milter.cache import AddrCache
from Milter.plock import PLock


def test_plock_commit_keeps_backup(tmp_path: Path) -> None:
    target = tmp_path / "list"
    target.write_text("old\n")
    lock = PLock(str(target))
    out = lock.lock()
    with pytest.raises(FileExistsError):
        PLock(str(target)).lock()  # a second updater waits its turn
    out.write("new\n")
    lock.commit(str(target) + ".old")
    assert target.read_text() == "new\n"
    assert (tmp_path / "list.old").read_text() == "old\n"
    assert not (tmp_path / "list.lock").exists()


def test_plock_unlock_abandons(tmp_path: Path) -> None:
    target = tmp_path / "list"
    target.write_text("keep\n")
    lock = PLock(str(target))
    lock.lock().write("discard\n")
    lock.unlock()
    assert target.read_text() == "keep\n"
    assert not (tmp_path / "list.lock").exists()
    with pytest.raises(OSError, match="not locked"):
        lock.commit()


def test_addrcache_persists_and_expires(tmp_path: Path) -> None:
    fname = str(tmp_path / "white.log")
    old = time.strftime(AddrCache.time_format, time.localtime(time.time() - 40 * 86400))
    fresh = time.strftime(AddrCache.time_format, time.localtime())
    Path(fname).write_text(f"old@example.com {old}\nnew@example.com {fresh}\n"
                           "garbage@example.com not-a-date\nexample.net\n")
    cache = AddrCache(renew=30)
    cache.load(fname)
    assert "new@example.com" in cache
    assert "NEW@Example.com" in cache
    assert "old@example.com" not in cache
    assert "garbage@example.com" not in cache
    assert "anyone@example.net" in cache  # a domain entry covers its users
    # The expired and unparsable lines are dropped from the file too.
    assert Path(fname).read_text().splitlines() == [f"new@example.com {fresh}", "example.net"]
    assert Path(fname + ".old").exists()
    cache["cbv@example.org"] = (550, "no such user")  # in memory only
    assert cache["cbv@example.org"] == (550, "no such user")
    with pytest.raises(KeyError):
        cache["nobody@example.org"]
    assert len(Path(fname).read_text().splitlines()) == 2


@pytest.mark.parametrize("module", [greylist, greysql])
def test_greylist_rules(tmp_path: Path, module: object) -> None:
    g = module.Greylist(str(tmp_path / "grey.db"), grey_time=10, grey_expire=4)  # type: ignore[attr-defined]
    triple = ("192.0.2.1", "a@example.com", "b@example.org")
    assert g.check(*triple) == 0  # first seen: defer
    assert g.check(*triple, timeinc=60) == 0  # too early: defer
    assert g.check(*triple, timeinc=11 * 60) == 1  # retried in the window
    assert g.check(*triple, timeinc=30 * 86400) == 2  # active triples stay
    assert g.check("192.0.2.2", *triple[1:]) == 0  # another IP starts over
    late = ("192.0.2.3", "c@example.com", "d@example.org")
    assert g.check(*late) == 0
    assert g.check(*late, timeinc=5 * 3600) == 0  # first retry too late: start over
    assert g.check(*late, timeinc=5 * 3600 + 11 * 60) == 1
    assert g.clean(timeinc=100 * 86400) == 3
    g.close()


def test_greylist_export_imports_into_greysql(tmp_path: Path) -> None:
    shelf = greylist.Greylist(str(tmp_path / "grey.shelf"))
    shelf.check("192.0.2.1", ".x@example.com", "b@example.org")
    shelf.check("192.0.2.1", ".x@example.com", "b@example.org", timeinc=11 * 60)
    out = io.StringIO()
    shelf.export_csv(out)
    shelf.close()
    sql = greysql.Greylist(str(tmp_path / "grey.sqlite"))
    sql.import_csv(io.StringIO(out.getvalue()))
    # The triple is active after the import: the next message passes.
    assert sql.check("192.0.2.1", "%2ex@example.com", "b@example.org", timeinc=12 * 60) == 2
    sql.close()
    assert os.path.getsize(tmp_path / "grey.sqlite") > 0
