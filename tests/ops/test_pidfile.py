"""``--pidfile``: written once the socket listens, removed at a clean exit,
a stale one replaced, a live one refusing a second daemon in one line; and
systemd's READY=1 (``bmslib.sdnotify``)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from testbed.bmsd import REPO

from bmslib import exitcodes, pidfile, sdnotify
from bmslib.pidfile import Pidfile, PidfileError

from .helpers import Daemon, run_bms, write_config


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"%d\\n" % os.getpid())
print("locked", flush=True)
time.sleep(60)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock on tmp_path/p, as a running bms does."""
    with subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "p")],
                          stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        yield proc
        proc.kill()


# --- the module --------------------------------------------------------------------

def test_read_pid(tmp_path: Path) -> None:
    path = tmp_path / "p"
    assert pidfile.read_pid(str(path)) is None
    for garbage in ("", "abc\n", "-5\n", "0\n", "12 13\n", "99999999999\n"):
        path.write_text(garbage)
        assert pidfile.read_pid(str(path)) is None, garbage
    path.write_text("4242\n")
    assert pidfile.read_pid(str(path)) == 4242


def test_claim_write_release(tmp_path: Path) -> None:
    path = tmp_path / "p"
    pf = Pidfile(str(path))
    pf.claim()
    assert path.read_text() == ""  # claimed, not ready yet
    pf.write()
    assert path.read_text() == f"{os.getpid()}\n"
    assert stat.S_IMODE(path.stat().st_mode) & 0o022 == 0
    pf.release()
    assert not path.exists()
    pf.release()  # twice is harmless


@pytest.mark.parametrize("stale", ["", "garbage\n", "DEAD", "SELF"])
def test_unlocked_files_are_taken_over(tmp_path: Path, stale: str) -> None:
    """A dead daemon's file, garbage, or a live pid that holds no lock (a reused pid)."""
    stale = {"DEAD": f"{dead_pid()}\n", "SELF": f"{os.getppid()}\n"}.get(stale, stale)
    path = tmp_path / "p"
    path.write_text(stale)
    pf = Pidfile(str(path))
    pf.claim()
    assert path.read_text() == ""
    pf.write(1234)
    assert path.read_text() == "1234\n"
    pf.release()


def test_a_locked_file_refuses_in_one_line(tmp_path: Path,
                                          holder: subprocess.Popen[str]) -> None:
    path = tmp_path / "p"
    with pytest.raises(PidfileError) as err:
        Pidfile(str(path)).claim()
    assert str(err.value) == f"already running as pid {holder.pid} (pidfile {path})"
    assert path.read_text() == f"{holder.pid}\n"  # untouched
    holder.kill()
    holder.wait()
    pf = Pidfile(str(path))  # its holder died: the lock went with it
    pf.claim()
    pf.release()


def test_release_never_removes_another_file(tmp_path: Path) -> None:
    path = tmp_path / "p"
    pf = Pidfile(str(path))
    pf.claim()
    path.unlink()
    path.write_text("999\n")  # a newer file in its place
    pf.release()
    assert path.read_text() == "999\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_written_after_switching_user_in_a_root_directory(open_tmp: Path) -> None:
    """Claimed as root, written and released as nobody: nobody may not
    remove files from root's directory, so release empties the file."""
    code = (
        "import os, sys\n"
        "from bmslib.pidfile import Pidfile\n"
        "pf = Pidfile(sys.argv[1]); pf.claim()\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "pf.write(); print('written', flush=True); sys.stdin.readline(); pf.release()\n")
    path = open_tmp / "p"  # open_tmp: root's, mode 0755
    with subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=REPO, text=True,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            assert proc.stdout.readline() == "written\n"
            assert path.read_text() == f"{proc.pid}\n"
            assert path.stat().st_uid == 0
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.wait(60) == 0
        finally:
            proc.kill()
    assert path.read_text() == ""
    with pytest.raises(PidfileError, match="cannot open"):
        Pidfile(str(open_tmp / "missing" / "p")).claim()


# --- the daemon --------------------------------------------------------------------

def test_pidfile_means_listening_and_goes_at_exit(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    d = Daemon(tmp_path, cfg)
    try:
        d.wait_ready()
        # Written after bind: whoever sees the pidfile can connect.
        assert stat.S_ISSOCK(os.stat(tmp_path / "run" / "bms.sock").st_mode)
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(tmp_path / "run" / "bms.sock"))
    finally:
        code = d.stop()
    assert code == 0
    assert not d.pidfile.exists()
    assert not (tmp_path / "run" / "bms.sock").exists()
    assert d.messages()[-1] == "bms stopped"


def test_stale_pidfile_is_replaced(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "bms.pid").write_text(f"{dead_pid()}\n")
    d = Daemon(tmp_path, cfg)
    try:
        d.wait_ready()  # asserts the pidfile now holds the new pid
    finally:
        assert d.stop() == 0


def test_live_pidfile_refuses_a_second_daemon_in_one_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    d = Daemon(tmp_path, cfg)
    try:
        d.wait_ready()
        sock = tmp_path / "run" / "bms.sock"
        before = os.stat(sock).st_ino
        out = run_bms("-c", str(cfg), "--pidfile", str(d.pidfile))
        assert out.returncode == exitcodes.UNAVAILABLE
        assert out.stderr == (f"bms: already running as pid {d.proc.pid} "
                              f"(pidfile {d.pidfile})\n")
        # The second one touched nothing: same socket file, same pidfile, still serving.
        assert os.stat(sock).st_ino == before
        assert d.pidfile.read_text() == f"{d.proc.pid}\n"
        assert d.proc.poll() is None
    finally:
        assert d.stop() == 0


# --- sd_notify ---------------------------------------------------------------------

def test_notify_without_systemd_does_nothing() -> None:
    assert sdnotify.notify("READY=1", environ={}) is False


def test_notify_path_and_abstract_socket(tmp_path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(str(tmp_path / "notify"))
        rx.settimeout(10)
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "notify")})
        assert rx.recv(100) == b"READY=1"
    name = f"bms-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind("\0" + name)
        rx.settimeout(10)
        assert sdnotify.notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert rx.recv(100) == b"STOPPING=1"


def test_daemon_tells_systemd_it_is_ready(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(str(tmp_path / "notify"))
        rx.settimeout(30)
        d = Daemon(tmp_path, cfg, env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify")})
        try:
            assert rx.recv(100) == b"READY=1"
            # Ready means listening, with the pidfile in place.
            assert d.pidfile.read_text() == f"{d.proc.pid}\n"
            assert stat.S_ISSOCK(os.stat(tmp_path / "run" / "bms.sock").st_mode)
        finally:
            assert d.stop() == 0
