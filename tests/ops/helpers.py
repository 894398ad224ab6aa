"""Helpers of the operations tier: a real ``bms`` process started the way
milter.init and systemd start it (``--pidfile``), with its files in a
temporary directory; directories and interpreters other users can use."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed.bmsd import LINE, REPO, config_text
from testbed.waiting import tail, wait_for

Sections = Mapping[str, Mapping[str, str]]

# Nothing answers on port 9: a DNS lookup would fail fast (none is expected).
QUIET_DNS = {"nameservers": "127.0.0.1:9", "timeout": "0.5", "lifetime": "1"}


def write_config(directory: Path, sections: Sections | None = None, name: str = "bms.cfg"
                 ) -> Path:
    """A config with every file of the daemon under ``directory``."""
    base: dict[str, dict[str, str]] = {
        "milter": {"socket": f"unix:{directory / 'run' / 'bms.sock'}",
                   "datadir": str(directory / "lib"), "logdir": str(directory / "log"),
                   "tempdir": str(directory / "save")},
        "spf": {"access_file": ""},
        "dns": dict(QUIET_DNS),
    }
    for section, options in (sections or {}).items():
        base.setdefault(section, {}).update(options)
    path = directory / name
    path.write_text(config_text(base))
    return path


def bms_command(*args: str, python: str = sys.executable) -> list[str]:
    return [python, "-m", "bms", *args]


def run_bms(*args: str, env: Mapping[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(bms_command(*args), capture_output=True, text=True, cwd=REPO,
                          timeout=60, env=None if env is None else dict(env))


class Daemon:
    """``python -m bms -c CONFIG --pidfile DIR/run/bms.pid ARGS`` in the background
    (as ``user``, with that user's group, when given)."""

    def __init__(self, directory: Path, config: Path, *args: str,
                 env: Mapping[str, str] | None = None, user: str | None = None,
                 python: str = sys.executable, cwd: Path = REPO,
                 groups: Sequence[str] = ()) -> None:
        self.dir = directory
        self.pidfile = directory / "run" / "bms.pid"
        self.log = directory / "log" / "milter.log"
        self.stderr = directory / "stderr.log"
        (directory / "run").mkdir(exist_ok=True)
        group = None if user is None else pwd.getpwnam(user).pw_gid
        with open(self.stderr, "ab") as err:
            self.proc = subprocess.Popen(
                bms_command("-c", str(config), "--pidfile", str(self.pidfile), *args,
                            python=python),
                cwd=cwd, stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
                env=None if env is None else dict(env), user=user, group=group,
                extra_groups=None if user is None else list(groups))

    def wait_ready(self, timeout: float = 30.0) -> Daemon:
        """Until the pidfile names the process (it is written once the socket listens)."""
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"bms exited with {self.proc.returncode}\n"
                                     f"{tail(str(self.stderr))}\n{tail(str(self.log))}")
            try:
                return self.pidfile.read_text() == f"{self.proc.pid}\n"
            except FileNotFoundError:
                return False
        wait_for(ready, timeout, "bms to write its pidfile")
        return self

    def messages(self, path: Path | None = None) -> list[str]:
        """The messages of the log lines in ``path`` (default: milter.log)."""
        path = path or self.log
        if not path.exists():
            return []
        out = []
        for line in path.read_text(errors="replace").splitlines():
            m = LINE.match(line)
            if m:
                out.append(m["msg"])
        return out

    def wait_log(self, text: str, timeout: float = 20.0) -> None:
        wait_for(lambda: any(text in m for m in self.messages()), timeout,
                 f"milter.log line with {text!r}", detail=lambda: tail(str(self.log)))

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def open_fds(pid: int) -> list[str]:
    """Where the process's file descriptors point (readlink of /proc/PID/fd/*)."""
    base = f"/proc/{pid}/fd"
    out = []
    for fd in os.listdir(base):
        try:
            out.append(os.readlink(f"{base}/{fd}"))
        except OSError:
            continue
    return out


def run(cmd: Sequence[str], env: Mapping[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else dict(env), check=False)


def world_tmp(prefix: str) -> Path:
    """A fresh directory under /tmp that every user may enter (pytest's own
    tmp_path is inside a 0700 directory of root's)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def runs_as(user: str, python: Path, code: str) -> bool:
    """Whether ``user`` can run ``python -c code`` (directories of the
    interpreter or the libraries may be closed to it)."""
    try:
        proc = subprocess.run([str(python), "-c", code], user=user,
                              group=pwd.getpwnam(user).pw_gid,
                              extra_groups=[], capture_output=True, timeout=60, cwd="/",
                              check=False)
    except (OSError, KeyError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0


@dataclass(frozen=True)
class Installed:
    """bms installed into a venv of its own: ``bin`` is the console script;
    ``drop_user`` is the user the daemon can switch to (tests run as root and
    that user can run this interpreter), else None."""

    venv: Path
    python: Path
    bin: Path
    drop_user: str | None
    pip_output: str
