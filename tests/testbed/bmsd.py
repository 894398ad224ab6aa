"""The real ``bms`` daemon as a child process, for socket and end-to-end tests.

:class:`BmsDaemon` writes a ``pymilter.cfg`` and an access file into a
temporary directory, runs ``python -m bms -c that.cfg`` on a free loopback
port, waits until it listens, and reads its ``milter.log``.  ``reload()``
sends SIGHUP and waits for the daemon's answer in the log; ``stop()`` sends
SIGTERM and expects exit status 0.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .milter import free_port
from .postfix import listening
from .waiting import tail, wait_for

REPO = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^\d{4}[A-Z][a-z]{2}\d{2} \d{2}:\d{2}:\d{2} \[(?P<id>[^\]]*)\] (?P<msg>.*)$")

Sections = Mapping[str, Mapping[str, str]]


def config_text(sections: Sections) -> str:
    out = []
    for name, options in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{k} = {v}" for k, v in options.items())
        out.append("")
    return "\n".join(out)


def catches(pid: int, signum: int) -> bool:
    """Has process ``pid`` installed a handler for ``signum`` (/proc SigCgt)?"""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    except OSError:
        pass
    return False


class BmsDaemon:
    def __init__(self, sections: Sections, access: str, *, directory: str | None = None
                 ) -> None:
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="bms-daemon-"))
        self.port = free_port()
        self.log_dir = self.dir / "log"
        self.cfg = self.dir / "pymilter.cfg"
        self.access = self.dir / "access"
        self.access.write_text(access)
        base: dict[str, dict[str, str]] = {
            "milter": {"socket": f"inet:{self.port}@127.0.0.1",
                       "datadir": str(self.dir / "data"), "logdir": str(self.log_dir),
                       "tempdir": str(self.dir / "tmp")},
            "spf": {"access_file": str(self.access)},
        }
        for name, options in sections.items():
            base.setdefault(name, {}).update(options)
        self.sections = base
        self.cfg.write_text(config_text(base))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def libmilter_spec(self) -> str:
        return f"inet:{self.port}@127.0.0.1"

    @property
    def postfix_spec(self) -> str:
        return f"inet:127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.log_dir / "milter.log"

    def start(self, timeout: float = 30.0) -> BmsDaemon:
        with open(self.dir / "stderr.log", "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "bms", "-c", str(self.cfg)],
                                         cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        proc = self.proc
        wait_for(lambda: listening("127.0.0.1", self.port) or proc.poll() is not None,
                 timeout, "bms listening")
        if proc.poll() is not None:
            raise RuntimeError(f"bms exited with {proc.returncode}:\n"
                               f"{tail(str(self.dir / 'stderr.log'))}\n{tail(str(self.log_file))}")
        return self

    def lines(self) -> list[tuple[str, str]]:
        """``(connection id, message)`` of every line of milter.log so far."""
        if not self.log_file.exists():
            return []
        out = []
        for line in self.log_file.read_text(errors="replace").splitlines():
            m = LINE.match(line)
            if m:
                out.append((m["id"], m["msg"]))
        return out

    def messages(self) -> list[str]:
        return [msg for _, msg in self.lines()]

    def connection_of(self, text: str) -> list[str]:
        """Every log message of the connection whose log contains ``text``."""
        lines = self.lines()
        ids = {cid for cid, msg in lines if text in msg}
        assert len(ids) == 1, f"{len(ids)} connections logged {text!r}"
        return [msg for cid, msg in lines if cid in ids]

    def wait_log(self, text: str, timeout: float = 20.0, start: int = 0) -> str:
        def found() -> str | None:
            for msg in self.messages()[start:]:
                if text in msg:
                    return msg
            return None
        return wait_for(found, timeout, f"milter.log line with {text!r}",
                        detail=lambda: tail(str(self.log_file)))

    def write_config(self, text: str) -> None:
        self.cfg.write_text(text)

    def reload(self) -> None:
        """SIGHUP, once the daemon catches it: it listens before it installs
        its handlers, and SIGHUP's default action would end it."""
        proc = self.proc
        assert proc is not None
        wait_for(lambda: catches(proc.pid, signal.SIGHUP) or proc.poll() is not None, 20,
                 "bms to catch SIGHUP")
        proc.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 20.0) -> int:
        proc, self.proc = self.proc, None
        if proc is None:
            return 0
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return int(proc.returncode)

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir and not os.environ.get("BMS_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> BmsDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
