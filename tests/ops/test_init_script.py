"""``milter.init`` against bms as pip installs it: a fresh venv, the console
script, the shipped sample config with the paths moved to a temporary
directory by a second ``-c`` file.  Run as root (CI), the daemon binds its
socket and then runs as user mail, as in production."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from mtaclient import MtaClient
from testbed.bmsd import REPO, config_text
from testbed.waiting import tail, wait_for

from .helpers import QUIET_DNS, Installed

INIT = REPO / "milter.init"


@dataclass
class Setup:
    dir: Path
    env: Mapping[str, str]
    user: str
    pidfile: Path
    socket: Path
    log: Path

    def init(self, action: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["/bin/sh", str(INIT), action], capture_output=True, text=True,
                              env=dict(self.env), timeout=120, check=False)

    def pid(self) -> int:
        text = self.pidfile.read_text()
        assert re.fullmatch(r"[1-9][0-9]*\n", text), repr(text)
        return int(text)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def gone(pid: int) -> bool:
    """The process has exited (a zombie nobody reaped counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(") ")[2][:1] == "Z"
    except FileNotFoundError:
        return True


def uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[2])  # effective uid
    raise AssertionError(f"no Uid line for {pid}")


@pytest.fixture
def setup(installed: Installed, open_tmp: Path) -> Setup:
    d = open_tmp
    shutil.copy(REPO / "pymilter.cfg", d / "pymilter.cfg")
    shutil.copy(REPO / "access", d / "access")
    (d / "override.cfg").write_text(config_text({
        "milter": {"socket": f"unix:{d / 'run' / 'bms.sock'}", "datadir": str(d / "lib"),
                   "logdir": str(d / "log"), "tempdir": str(d / "save"),
                   "socket_mode": "0660"},
        "spf": {"access_file": str(d / "access")},
        "dns": QUIET_DNS}))
    user = installed.drop_user or pwd.getpwuid(os.geteuid()).pw_name
    (d / "default").write_text(
        f"BMS_BIN={installed.bin}\n"
        f'BMS_CONFIG="{d / "pymilter.cfg"} {d / "override.cfg"}"\n'
        f"BMS_PIDFILE={d / 'pid' / 'bms.pid'}\n"
        f"BMS_USER={user}\n"
        f"BMS_CHDIR={d}\n")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "BMS_DEFAULTS": str(d / "default")}
    return Setup(d, env, user, d / "pid" / "bms.pid", d / "run" / "bms.sock",
                 d / "log" / "milter.log")


def test_pip_installs_a_working_console_script(installed: Installed) -> None:
    assert "Successfully installed bms" in installed.pip_output, installed.pip_output
    where = subprocess.run([str(installed.python), "-c", "import bms, Milter; "
                            "print(bms.__file__); print(Milter.__file__)"],
                           capture_output=True, text=True, cwd="/", check=False)
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(installed.venv)) for line in where.stdout.split()), \
        where.stdout  # the installed copy, not the source tree
    out = subprocess.run([str(installed.bin), "-c", str(REPO / "pymilter.cfg"),
                          "--print-mta-config"], capture_output=True, text=True, cwd="/",
                         check=False)
    assert out.returncode == 0, out.stderr
    assert "smtpd_milters = inet:127.0.0.1:8894" in out.stdout


def test_root_runs_switch_to_mail(installed: Installed) -> None:
    """Makes it visible when the tests below cannot show the switch to mail."""
    if os.geteuid() != 0:
        pytest.skip("not root: the daemon runs as the current user")
    if installed.drop_user is None:
        pytest.skip("no interpreter here that user mail can run (all live in closed "
                    "directories): the init script tests run without switching users")
    assert installed.drop_user == "mail"


def test_start_status_reload_stop(setup: Setup, installed: Installed) -> None:
    s = setup
    assert s.init("status").returncode == 3

    started = s.init("start")
    assert started.returncode == 0, started.stdout + started.stderr
    pid = s.pid()
    assert f"started (pid {pid})" in started.stdout
    assert not gone(pid)
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert str(installed.bin).encode() in f.read()  # the console script pip made
    st = os.stat(s.socket)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
    account = pwd.getpwnam(s.user)
    assert uid_of(pid) == account.pw_uid
    if installed.drop_user:  # started by root: directories made for the user
        assert st.st_uid == account.pw_uid
        for sub, mode in (("run", 0o755), ("lib", 0o750), ("log", 0o750), ("save", 0o700),
                          ("pid", 0o755)):
            dst = os.stat(s.dir / sub)
            assert (dst.st_uid, dst.st_gid, stat.S_IMODE(dst.st_mode)) == (
                account.pw_uid, account.pw_gid, mode), sub
        assert f"running as user {s.user}" in s.log_text()

    again = s.init("start")
    assert again.returncode == 0 and "already running" in again.stdout
    assert s.pid() == pid

    status = s.init("status")
    assert status.returncode == 0 and f"running (pid {pid})" in status.stdout

    with MtaClient(str(s.socket), family=socket.AF_UNIX) as mta:
        mta.negotiate()  # it serves

    reload = s.init("reload")
    assert reload.returncode == 0, reload.stderr
    wait_for(lambda: "RELOAD: " in s.log_text(), 20, "the RELOAD line",
             detail=lambda: tail(str(s.log)))

    stopped = s.init("stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
    assert gone(pid)
    assert not s.pidfile.exists()
    assert not s.socket.exists()
    assert s.init("status").returncode == 3

    text = s.log_text()
    assert f"bms starting on unix:{s.socket} (1 worker), pid {pid}" in text
    assert text.rstrip().endswith("bms stopped"), tail(str(s.log))
    assert text.index("bms starting") < text.index("RELOAD: ") < text.index("bms stopped")


def test_stale_pidfile_and_condrestart(setup: Setup) -> None:
    s = setup
    s.pidfile.parent.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    s.pidfile.write_text(f"{dead.pid}\n")
    status = s.init("status")
    assert status.returncode == 1 and "dead" in status.stdout
    cond = s.init("condrestart")  # not running: nothing starts
    assert cond.returncode == 0 and not s.socket.exists()
    assert s.init("reload").returncode == 7

    started = s.init("start")  # the stale pidfile is replaced
    assert started.returncode == 0, started.stdout + started.stderr
    first = s.pid()
    assert first != dead.pid
    cond = s.init("condrestart")
    assert cond.returncode == 0, cond.stdout + cond.stderr
    second = s.pid()
    assert second != first and gone(first) and not gone(second)
    assert s.init("status").returncode == 0
    assert s.init("stop").returncode == 0
    assert gone(second) and not s.pidfile.exists()
    assert s.init("stop").returncode == 0  # stopping a stopped service is fine
    assert s.init("status").returncode == 3


@pytest.mark.parametrize(("bad", "expected"), [
    ("[milter]\nmax_demerits = lots\n", "[milter] max_demerits: expected an integer"),
    # Found by the daemon itself, after the script launched it: shown from its stderr.
    ("[spf]\naccess_file = /nonexistent/access\n", "/nonexistent/access: cannot read"),
])
def test_start_failure_shows_the_daemons_error(setup: Setup, bad: str, expected: str) -> None:
    s = setup
    path = s.dir / "bad.cfg"
    path.write_text(bad)
    default = s.dir / "default"
    default.write_text(default.read_text() + f'BMS_CONFIG="$BMS_CONFIG {path}"\n')
    out = s.init("start")
    assert out.returncode == 1, out.stdout + out.stderr
    assert expected in out.stderr, out.stderr
    assert not s.pidfile.exists() and not s.socket.exists()
    assert s.init("status").returncode == 3
    assert s.init("bogus").returncode == 2
