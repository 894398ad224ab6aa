"""``[milter] log`` and ``log_format`` on a real ``bms`` process driven by a
scripted MTA: syslog through a datagram socket of the test's own (facility,
ident, the connection id, no milter.log), and JSON lines (every line parses
and decision lines carry stage, verdict, reason, client IP, sender,
recipients and queue id) on stderr and in milter.log."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mtaclient import internal_and_zombie_sessions
from testbed.bmsd import REPO, BmsDaemon, config_text
from testbed.waiting import wait_for

from bmslib import exitcodes

BASE = {
    "milter": {"internal_connect": "192.0.2.0/24", "internal_domains": "example.net",
               "hello_blacklist": "mx.example.test"},
    "dns": {"nameservers": "127.0.0.1:9", "timeout": "0.5", "lifetime": "1"},
}
LOCAL3_INFO = 19 * 8 + 6  # syslog priority: facility local3, severity info


class SyslogServer:
    """A syslog "daemon": a unix datagram socket, read by a thread (a reader
    that falls behind would block the logger, as with a real one)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.datagrams: list[bytes] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            self.datagrams.append(data)

    def lines(self, last: str) -> list[str]:
        """Every line received, once one ending with ``last`` has come."""
        def done() -> list[str] | None:
            lines = [g.rstrip(b"\0\n").decode() for g in list(self.datagrams)]
            return lines if any(line.endswith(last) for line in lines) else None
        return wait_for(done, 10, f"a syslog line ending with {last!r}")

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture
def syslog_server(tmp_path: Path) -> Iterator[SyslogServer]:
    server = SyslogServer(tmp_path / "dev-log")
    yield server
    server.close()


def test_syslog_gets_every_line_with_facility_ident_and_connection_id(
        tmp_path: Path, syslog_server: SyslogServer) -> None:
    sections = {**BASE, "milter": {**BASE["milter"], "log": "syslog:local3",
                                   "syslog_socket": str(tmp_path / "dev-log")}}
    with BmsDaemon(sections, "", directory=str(tmp_path)) as d:
        internal_and_zombie_sessions(d.port)
        assert d.stop() == 0
        pid_prefix = f"<{LOCAL3_INFO}>bms["
        lines = syslog_server.lines("bms stopped")
    assert all(line.startswith(pid_prefix) for line in lines), lines
    messages = [line.split("]: ", 1)[1] for line in lines]
    ids = {m.split("] ", 1)[0][1:] for m in messages if "connect from pc" in m}
    assert len(ids) == 2 and all(i.isdigit() for i in ids), messages
    texts = [m.split("] ", 1)[1] for m in messages]
    assert "connect from pc1.example.net at (192.0.2.7, 4000) INTERNAL" in texts, texts
    assert "ACCEPT: 2 recipients, queue id QUEUE1" in texts, texts
    assert "REJECT: zombie PC at 192.0.2.8 sending MAIL FROM pc@zombie.example" in texts
    assert not (tmp_path / "log" / "milter.log").exists()


def test_syslog_socket_missing_is_one_line(tmp_path: Path) -> None:
    sections = {**BASE, "milter": {**BASE["milter"], "socket": "inet:0@127.0.0.1",
                                   "log": "syslog", "datadir": str(tmp_path),
                                   "syslog_socket": str(tmp_path / "nothing-here")}}
    cfg = tmp_path / "pymilter.cfg"
    cfg.write_text(config_text({**sections, "spf": {"access_file": ""}}))
    out = subprocess.run([sys.executable, "-m", "bms", "-c", str(cfg), "--foreground"],
                         capture_output=True, text=True, cwd=REPO, timeout=60, check=False)
    assert out.returncode == exitcodes.CONFIG, out
    assert out.stderr == (f"bms: cannot write the log in {tmp_path}: syslog socket "
                          f"{tmp_path / 'nothing-here'}: No such file or directory\n"), out


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines()]  # every line parses
    assert lines and all(isinstance(e, dict) for e in lines)
    return lines


@pytest.mark.parametrize("target", ["stderr", "file"])
def test_json_lines_carry_the_fields(tmp_path: Path, target: str) -> None:
    sections = {**BASE, "milter": {**BASE["milter"], "log": target, "log_format": "json"}}
    with BmsDaemon(sections, "", directory=str(tmp_path)) as d:
        internal_and_zombie_sessions(d.port)
        assert d.stop() == 0
    path = tmp_path / ("stderr.log" if target == "stderr" else "log/milter.log")
    entries = json_lines(path.read_text())
    keys = {"time", "level", "connid", "message", "stage", "verdict", "reason", "client_ip",
            "sender", "recipients", "queue_id"}
    by_message = {e["message"]: e for e in entries}
    accept = by_message["ACCEPT: 2 recipients, queue id QUEUE1"]
    assert keys <= set(accept), accept
    assert (accept["stage"], accept["verdict"], accept["reason"]) == ("eom", "accept", "ok")
    assert accept["client_ip"] == "192.0.2.7" and accept["sender"] == "alice@example.net"
    assert accept["recipients"] == ["bob@example.org", "carol@example.org"]
    assert accept["queue_id"] == "QUEUE1" and accept["connid"].isdigit()
    assert accept["level"] == "info" and accept["time"].endswith("+00:00")
    reject = by_message["REJECT: zombie PC at 192.0.2.8 sending MAIL FROM pc@zombie.example"]
    assert (reject["stage"], reject["verdict"], reject["reason"]) == (
        "mail", "reject", "zombie PC"), reject
    assert (reject["client_ip"], reject["sender"], reject["recipients"]) == (
        "192.0.2.8", "pc@zombie.example", [])
    connect = by_message["connect from pc2.example.net at (192.0.2.8, 4000) INTERNAL"]
    assert connect["stage"] == "connect" and connect["verdict"] is None
    assert connect["connid"] == reject["connid"] != accept["connid"]
    # Lines outside a connection have no connection fields.
    stopped = by_message["bms stopped"]
    assert stopped["connid"] == "-" and stopped["client_ip"] is None
    assert stopped.get("stage") is None
    if target == "stderr":
        assert not (tmp_path / "log" / "milter.log").exists()


def test_a_reload_moves_the_log_to_a_new_target(
        tmp_path: Path, syslog_server: SyslogServer) -> None:
    """SIGHUP with another ``[milter] log``: the new target is opened first,
    the old one says where the log went, the new one where it came from; a
    target that cannot be opened leaves the log where it was."""
    dev_log = tmp_path / "dev-log"
    with BmsDaemon(BASE, "", directory=str(tmp_path)) as d:
        file_log = str(d.log_file)

        def reload_with(**options: str) -> None:
            sections = {**d.sections, "milter": {**d.sections["milter"], **options}}
            d.write_config(config_text(sections))
            d.reload()

        reload_with(log="syslog:local3", syslog_socket=str(dev_log))
        moved = d.wait_log("reload: the log moves to")
        assert moved == f"reload: the log moves to syslog (facility local3, {dev_log})"
        lines = syslog_server.lines(f"reload: the log moved here from {file_log}")
        wait_for(lambda: any(b"] RELOAD: " in g for g in syslog_server.datagrams), 10,
                 "the RELOAD line in syslog")  # the rest of the reload logs there
        internal_and_zombie_sessions(d.port)
        lines = syslog_server.lines("ACCEPT: 2 recipients, queue id QUEUE1")
        assert not any("ACCEPT: 2 recipients" in m for m in d.messages())

        reload_with(log="syslog:local3", syslog_socket=str(tmp_path / "gone"))
        lines = syslog_server.lines(f"{tmp_path / 'gone'}: No such file or directory; "
                                    "the log stays in syslog (facility local3, "
                                    f"{dev_log})")
        assert any(f"reload: cannot log to syslog (facility local3, {tmp_path / 'gone'})"
                   in line for line in lines), lines

        before = len(syslog_server.datagrams)
        reload_with(log="file", log_format="json", syslog_socket=str(dev_log))
        syslog_server.lines(f"reload: the log moves to {file_log} as JSON")
        def json_part() -> list[dict[str, Any]] | None:
            text = d.log_file.read_text()
            found = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
            return found if any("moved here" in e["message"] for e in found) else None

        entries = wait_for(json_part, 10, "the JSON lines in milter.log")
        assert entries[0]["message"] == (
            f"reload: the log moved here from syslog (facility local3, {dev_log})")
        assert d.stop() == 0
        assert json_part() is not None
        assert [e["message"] for e in json_part() or []][-1] == "bms stopped"
        assert not any(b"bms stopped" in g for g in syslog_server.datagrams[before:])
