"""``logrotate/bms`` with a real logrotate: the shipped file, its paths moved
to a temporary directory.  Rotation renames milter.log (no copytruncate);
the postrotate's SIGUSR1 makes bms reopen it; no line is lost or split, even
while 200 messages go through real Postfix."""

from __future__ import annotations

import re
import shutil
import signal
import threading
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from testbed import Postfix, free_port, make_message
from testbed.bmsd import LINE, REPO
from testbed.pytest_plugin import require_netns
from testbed.waiting import tail, wait_for

from .helpers import Daemon, open_fds, run, write_config

SHIPPED = REPO / "logrotate" / "bms"
LOG_PATH = "/var/log/milter/milter.log"
PID_PATH = "/run/milter/bms.pid"

pytestmark = pytest.mark.skipif(shutil.which("logrotate") is None,
                                reason="logrotate is not installed (./test.sh installs it)")


def rotate_config(d: Daemon) -> Path:
    """The shipped configuration with its two paths pointing into the test's directory."""
    text = SHIPPED.read_text()
    assert text.count(LOG_PATH) == 1 and text.count(PID_PATH) == 1
    conf = d.dir / "logrotate.conf"
    conf.write_text(text.replace(LOG_PATH, str(d.log)).replace(PID_PATH, str(d.pidfile)))
    return conf


def logrotate(d: Daemon, conf: Path) -> None:
    out = run(["logrotate", "-f", "-s", str(d.dir / "logrotate.state"), str(conf)])
    assert (out.returncode, out.stdout, out.stderr) == (0, "", ""), out


def parsed(path: Path) -> list[tuple[str, str]]:
    """``(connection id, message)`` of every line; a line not in the log
    format (torn by the rotation) fails the test."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = LINE.match(line)
        assert m, f"not a whole log line in {path.name}: {line!r}"
        out.append((m["id"], m["msg"]))
    return out


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path, write_config(tmp_path))
    try:
        yield d.wait_ready()
    finally:
        d.stop()


def test_rotation_moves_the_daemon_to_a_new_file(daemon: Daemon) -> None:
    d = daemon
    rotated = d.log.with_name("milter.log.1")
    logrotate(d, rotate_config(d))
    assert "bms starting on" in rotated.read_text()
    assert not rotated.with_name("milter.log.1.gz").exists()  # delaycompress
    # No line was logged since: only SIGUSR1 can have made it open the new file.
    wait_for(lambda: str(d.log) in open_fds(d.proc.pid), 20, "bms to reopen milter.log")
    assert str(rotated) not in open_fds(d.proc.pid)
    assert d.log.read_text() == ""
    d.signal(signal.SIGHUP)
    d.wait_log("RELOAD: ")
    assert "RELOAD" not in rotated.read_text()
    assert d.stop() == 0
    assert d.messages()[-1] == "bms stopped"


MESSAGES = 200
ROTATE_AFTER = 60  # messages logged before logrotate runs
PAUSE_AT = 100  # the sender waits here until logrotate has started


@pytest.mark.e2e
def test_rotation_during_200_messages_loses_no_line(tmp_path: Path) -> None:
    require_netns()
    port = free_port()
    d = Daemon(tmp_path, write_config(tmp_path, {"milter": {
        "socket": f"inet:{port}@127.0.0.1", "internal_connect": "127.0.0.0/8"}}))
    pf = Postfix(milters=f"inet:127.0.0.1:{port}")  # its own directory, open to postfix
    errors: list[BaseException] = []
    rotating = threading.Event()

    def send() -> None:
        try:
            for i in range(MESSAGES):
                if i == PAUSE_AT:
                    assert rotating.wait(60), "logrotate never started"
                client = pf.smtp()
                try:
                    client.ehlo("client.example.test")
                    _mid, msg = make_message(sender=f"s{i}@example.net")
                    t = client.transaction(f"s{i}@example.net", ["r@example.test"], msg)
                    assert t.data is not None and t.data.code == 250, t
                finally:
                    client.close_politely()
        except BaseException as exc:
            errors.append(exc)

    try:
        d.wait_ready()
        pf.start()
        thread = threading.Thread(target=send, name="sender")
        thread.start()
        try:
            wait_for(lambda: errors or sum("mail from <s" in m for m in d.messages())
                     >= ROTATE_AFTER, 120, f"{ROTATE_AFTER} messages in the log")
            rotating.set()
            logrotate(d, rotate_config(d))
        finally:
            rotating.set()
            thread.join(300)
        assert not errors, errors
        wait_for(lambda: str(d.log) in open_fds(d.proc.pid), 20, "bms to reopen milter.log")
    finally:
        try:
            pf.cleanup()
        finally:
            code = d.stop()
    assert code == 0

    rotated, current = parsed(d.log.with_name("milter.log.1")), parsed(d.log)
    both = rotated + current
    assert not set(rotated) & set(current)  # no write landed in both files
    by_conn: dict[str, list[str]] = defaultdict(list)
    for cid, msg in both:
        by_conn[cid].append(msg)
    shapes = set()
    for i in range(MESSAGES):
        sender = f"<s{i}@example.net>"
        conns = [cid for cid, msgs in by_conn.items() if any(sender in m for m in msgs)]
        assert len(conns) == 1, (i, conns)
        msgs = by_conn[conns[0]]
        shapes.add(tuple(_shape(m.replace(sender, "<S>")) for m in msgs))
    assert len(shapes) == 1, shapes  # every message logged the same lines, none lost
    shape = shapes.pop()
    assert any("mail from <S>" in m for m in shape), shape
    n_rotated = sum("mail from <s" in m for _, m in rotated)
    n_current = sum("mail from <s" in m for _, m in current)
    assert n_rotated + n_current == MESSAGES
    assert n_rotated >= ROTATE_AFTER and n_current >= 1, (n_rotated, n_current)
    assert current[-1][1] == "bms stopped"  # it kept logging to the new file
    assert all(m != "bms stopped" for _, m in rotated), tail(str(d.log))


def _shape(message: str) -> str:
    """A log message without what differs between messages (queue ids, ports)."""
    return re.sub(r"\d+", "#", re.sub(r"queue id \w+", "queue id Q", message))
