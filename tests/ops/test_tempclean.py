"""``[milter] tempdir_max_age``: old regular files in tempdir are deleted,
nothing else (links are never followed, directories never deleted); at
startup and then from the server's main loop, in the parent process only."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from bmslib.tempclean import DAY, TempCleaner, clean_tempdir
from Milter.server import MilterServer

from .helpers import Daemon, write_config

NOW = 1_900_000_000.0


def make(path: Path, age_days: float, now: float = NOW) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    when = now - age_days * DAY
    os.utime(path, (when, when))
    return path


def age(path: Path, days: float, now: float = NOW) -> None:
    when = now - days * DAY
    os.utime(path, (when, when), follow_symlinks=False)


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """tempdir with old and new files, a subdirectory, links out, a FIFO."""
    t = tmp_path / "save"
    outside = tmp_path / "outside"
    files = {
        "old": make(t / "bms-old.msg", 8),
        "new": make(t / "bms-new.msg", 1),
        "edge": make(t / "bms-edge.msg", 6.99),
        "sub_old": make(t / "sub" / "deep" / "old.msg", 30),
        "outside_old": make(outside / "victim.txt", 100),
        "outside_in_dir": make(outside / "dir" / "victim.txt", 100),
    }
    files["link_file"] = t / "link-to-victim"
    files["link_file"].symlink_to(files["outside_old"])
    files["link_dir"] = t / "link-to-dir"
    files["link_dir"].symlink_to(outside / "dir")
    files["fifo"] = t / "fifo"
    os.mkfifo(files["fifo"])
    for key in ("link_file", "link_dir", "fifo"):
        age(files[key], 100)
    for d in (t / "sub" / "deep", t / "sub"):
        age(d, 100)
    files["tempdir"] = t
    return files


def test_removes_only_old_regular_files_inside(tree: dict[str, Path]) -> None:
    assert clean_tempdir(str(tree["tempdir"]), 7, now=NOW) == 2
    assert not tree["old"].exists()
    assert not tree["sub_old"].exists()
    for kept in ("new", "edge", "outside_old", "outside_in_dir"):
        assert tree[kept].exists(), kept
    for kept in ("link_file", "link_dir", "fifo"):
        assert tree[kept].is_symlink() or tree[kept].exists(), kept
    assert (tree["tempdir"] / "sub" / "deep").is_dir()  # directories stay
    assert clean_tempdir(str(tree["tempdir"]), 7, now=NOW) == 0


def test_the_age_is_in_days_and_fractions_work(tree: dict[str, Path]) -> None:
    assert clean_tempdir(str(tree["tempdir"]), 0.5, now=NOW) == 4  # new and edge too
    assert sorted(p.name for p in tree["tempdir"].iterdir()) == [
        "fifo", "link-to-dir", "link-to-victim", "sub"]


def test_zero_means_never_and_a_missing_dir_is_nothing(tree: dict[str, Path],
                                                       tmp_path: Path) -> None:
    assert clean_tempdir(str(tree["tempdir"]), 0, now=NOW) == 0
    assert tree["old"].exists()
    assert clean_tempdir(str(tmp_path / "nowhere"), 7, now=NOW) == 0
    assert clean_tempdir("", 7, now=NOW) == 0


def test_a_tempdir_that_is_a_link_is_cleaned_where_it_points(tmp_path: Path) -> None:
    """The configured path is the admin's choice; only links inside are distrusted."""
    real = tmp_path / "real"
    old = make(real / "old.msg", 30, now=time.time())
    (tmp_path / "alias").symlink_to(real)
    cleaner = TempCleaner(lambda: (str(tmp_path / "alias"), 7.0))
    assert cleaner.run() == 1
    assert not old.exists()


def test_cleaner_runs_at_first_tick_then_once_per_interval(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    t = tmp_path / "save"
    clock = [1000.0]
    settings = [(str(t), 7.0)]
    cleaner = TempCleaner(lambda: settings[0], interval=3600, clock=lambda: clock[0])
    caplog.set_level(logging.INFO, logger="bmslib.tempclean")

    make(t / "a", 10, now=time.time())
    make(t / "b", 10, now=time.time())
    cleaner.tick()  # startup
    assert not (t / "a").exists() and not (t / "b").exists()
    assert [r.getMessage() for r in caplog.records] == [
        f"TEMPDIR: removed 2 files older than 7 days from {t}"]

    make(t / "c", 10, now=time.time())
    clock[0] += 3599
    cleaner.tick()  # too early
    assert (t / "c").exists()
    clock[0] += 1
    settings[0] = (str(t), 0.0)  # reloaded: never
    cleaner.tick()
    assert (t / "c").exists()
    clock[0] += 3600
    settings[0] = (str(t), 1.5)
    cleaner.tick()
    assert not (t / "c").exists()
    clock[0] += 3600
    cleaner.tick()  # nothing to remove: no line
    assert [r.getMessage() for r in caplog.records][1:] == [
        f"TEMPDIR: removed 1 files older than 1.5 days from {t}"]


def _idle_server() -> MilterServer:
    def no_connections(*_args: object) -> object:
        raise AssertionError("no MTA connects in this test")
    return MilterServer("inet:0@127.0.0.1", no_connections, drain_seconds=1)  # type: ignore[arg-type]


def test_server_ticks_from_its_main_loop() -> None:
    server = _idle_server()
    ticks: list[int] = []

    def tick() -> None:
        ticks.append(os.getpid())
        if len(ticks) == 2:
            server.stop()
        if len(ticks) == 1:
            raise RuntimeError("a failing tick is logged, the server goes on")

    server.on_tick = tick
    server.serve_forever(handle_signals=False)
    assert ticks == [os.getpid(), os.getpid()]


def test_with_workers_only_the_parent_ticks(tmp_path: Path) -> None:
    server = _idle_server()
    server.workers = 2
    record = tmp_path / "ticks"
    parent = os.getpid()

    def tick() -> None:
        with open(record, "a") as f:
            f.write(f"{os.getpid()}\n")
        if os.getpid() == parent and record.read_text().count("\n") >= 5:
            server.stop()  # the workers have served for over a second by now

    server.on_tick = tick
    server.serve_forever(handle_signals=False)
    assert set(record.read_text().split()) == {str(parent)}


def test_daemon_cleans_at_startup(tmp_path: Path) -> None:
    old = make(tmp_path / "save" / "bms-old.msg", 8, now=time.time())
    new = make(tmp_path / "save" / "bms-new.msg", 1, now=time.time())
    cfg = write_config(tmp_path)
    d = Daemon(tmp_path, cfg)
    try:
        d.wait_ready()
        d.wait_log("TEMPDIR: ")
        assert f"TEMPDIR: removed 1 files older than 7 days from {tmp_path / 'save'}" \
            in d.messages()
        assert not old.exists() and new.exists()
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_each_serving_process_calls_on_stop_once_when_it_stops(
        tmp_path: Path, workers: int) -> None:
    """One process: on_stop in it, after the drain.  Workers: in each worker,
    not in the parent that only watches them."""
    server = _idle_server()
    server.workers = workers
    record = tmp_path / "stops"
    parent = os.getpid()
    ticks: list[float] = []

    def tick() -> None:
        ticks.append(time.monotonic())
        if len(ticks) == 3:
            server.stop()

    def stopped() -> None:
        with open(record, "a") as f:
            f.write(f"{os.getpid()}\n")

    server.on_tick = tick
    server.on_stop = stopped
    server.serve_forever(handle_signals=False)
    pids = record.read_text().split()
    if workers == 1:
        assert pids == [str(parent)]
    else:
        assert len(pids) == 2 and len(set(pids)) == 2 and str(parent) not in pids
