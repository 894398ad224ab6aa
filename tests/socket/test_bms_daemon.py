"""The daemon the README's run command starts: a real ``bms`` process."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

from mtaclient import MtaClient
from testbed.milter import free_port
from testbed.postfix import listening
from testbed.waiting import wait_for

from Milter.protocol import commands as cmd
from Milter.protocol import replies as R

LINE = re.compile(r"^\d{4}[A-Z][a-z]{2}\d{2} \d{2}:\d{2}:\d{2} \[(?P<id>[^\]]+)\] (?P<msg>.*)$")


def test_print_mta_config() -> None:
    out = subprocess.run([sys.executable, "-m", "bms", "--socket", "inet:8894@127.0.0.1",
                          "--print-mta-config"], capture_output=True, text=True, check=True)
    assert "Xpythonfilter, S=inet:8894@127.0.0.1, F=T, T=C:5m;S:20s;R:60s;E:5m" in out.stdout
    assert "smtpd_milters = inet:127.0.0.1:8894" in out.stdout


def test_bad_socket_is_one_clear_line() -> None:
    out = subprocess.run([sys.executable, "-m", "bms", "--socket", "inet:127.0.0.1:8894"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Postfix" in out.stderr


def test_daemon_logs_and_accepts_then_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bms", "--foreground", "--socket",
                             f"inet:{port}@127.0.0.1", "--logdir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: listening("127.0.0.1", port) or proc.poll() is not None, 20,
                 "bms listening")
        assert proc.poll() is None
        with MtaClient(("127.0.0.1", port)) as mta:
            mta.negotiate()
            assert mta.command(cmd.Connect(b"client.example.net", ord("4"), 4000,
                                           "192.0.2.7")) == R.CONTINUE
            assert mta.command(cmd.Helo(b"client.example.net\n\x1b[31mEVIL")) == R.CONTINUE
            mta.send(cmd.Macro(ord("M"), ((b"i", b"QUEUE1"),)))  # sendmail knows i at MAIL
            edits, final = mta.message(rcpts=(b"<bob@example.org>", b"<carol@example.org>"))
            assert final == R.ACCEPT and edits == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    lines = (tmp_path / "milter.log").read_text().splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    messages = [m.group("msg") for m in parsed if m]
    assert any("smtpd_milters = inet:127.0.0.1:" in m for m in messages)
    session = [m for m in parsed if m and m.group("id") != "-"]
    assert {m.group("id") for m in session} == {session[0].group("id")}  # one connection id
    texts = [m.group("msg") for m in session]
    assert texts[0] == "connect from client.example.net at ('192.0.2.7', 4000)"
    # Untrusted text is escaped: no line break or terminal escape reaches the log.
    assert texts[1] == "hello from client.example.net\\n\\x1b[31mEVIL"
    assert texts[2:] == ["mail from <alice@example.net>", "rcpt to <bob@example.org>",
                         "rcpt to <carol@example.org>", "ACCEPT: queue id QUEUE1, 2 recipients"]
    assert messages[-1] == "bms stopped"
