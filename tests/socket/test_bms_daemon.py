"""The daemon itself: a real ``bms`` process (``python -m bms -c …``) driven
over its milter socket by a scripted MTA.  No DNS is needed: the clients
here are internal (no SPF) or refused before SPF."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mtaclient import MtaClient
from testbed.bmsd import REPO, BmsDaemon, config_text

from bmslib import exitcodes
from Milter.protocol import commands as cmd
from Milter.protocol import replies as R

BASE = {
    "milter": {"internal_connect": "192.0.2.0/24", "internal_domains": "example.net",
               "hello_blacklist": "mx.example.test"},
    # Nothing answers there: a lookup would time out (none is expected here).
    "dns": {"nameservers": "127.0.0.1:9", "timeout": "0.5", "lifetime": "1"},
}
ACCESS = "SPF-Pass: OK\n"


def bms(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bms", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=60)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[BmsDaemon]:
    with BmsDaemon(BASE, ACCESS, directory=str(tmp_path)) as d:
        yield d


def mta(d: BmsDaemon) -> MtaClient:
    client = MtaClient(("127.0.0.1", d.port))
    client.negotiate()
    return client


def rejected(reply: R.Reply, code: bytes) -> bool:
    """A REPLYCODE whose every line carries ``code`` ("550", "550 5.7.1")."""
    if not isinstance(reply, R.ReplyCode):
        return False
    want = code.split(b" ")
    for line in reply.text.split(b"\r\n"):
        got = line.replace(b"-", b" ", 1).split(b" ")
        if got[:len(want)] != want:
            return False
    return True


# --- command line ------------------------------------------------------------------

def test_shipped_config_checks_and_prints_the_mta_lines() -> None:
    out = bms("-c", "pymilter.cfg", "--check-config")
    assert out.returncode == 0, out.stderr
    assert "configuration OK" in out.stdout
    out = bms("-c", "pymilter.cfg", "--socket", "inet:8894@127.0.0.1", "--print-mta-config")
    assert out.returncode == 0, out.stderr
    assert "Xpythonfilter, S=inet:8894@127.0.0.1, F=T, T=C:5m;S:20s;R:60s;E:5m" in out.stdout
    assert "smtpd_milters = inet:127.0.0.1:8894" in out.stdout
    assert "milter_connect_macros = j {daemon_name} {daemon_addr} {daemon_port} v _" \
        in out.stdout  # the submission-port exemption needs {daemon_port}


def test_bad_socket_is_one_clear_line() -> None:
    out = bms("-c", "pymilter.cfg", "--socket", "inet:127.0.0.1:8894")
    assert out.returncode == exitcodes.CONFIG
    assert out.stderr.count("\n") == 1 and "Postfix" in out.stderr


@pytest.mark.parametrize(("sections", "expected"), [
    ({"milter": {"max_demerit": "3"}}, "[milter] max_demerit"),  # typo'd option
    ({"milter": {"max_demerits": "lots"}}, "[milter] max_demerits"),  # wrong type
    ({"srs": {"secret": "s3cret"}}, "[srs] fwdomain"),  # SRS without fwdomain
    ({"spff": {"best_guess": "1"}}, "[spff]"),  # unknown section
])
def test_config_errors_stop_startup_with_one_line(
        tmp_path: Path, sections: dict[str, dict[str, str]], expected: str) -> None:
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(config_text({"milter": {"socket": "inet:0@127.0.0.1"}, **sections}))
    out = bms("-c", str(cfg), "--check-config")
    assert out.returncode == exitcodes.CONFIG, out
    assert out.stderr.count("\n") == 1, out.stderr
    assert str(cfg) in out.stderr and expected in out.stderr, out.stderr
    out = bms("-c", str(cfg), "--foreground")
    assert out.returncode == exitcodes.CONFIG, out
    assert out.stderr.count("\n") == 1 and expected in out.stderr, out.stderr


def test_missing_access_file_is_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.cfg"
    cfg.write_text(config_text({"spf": {"access_file": str(tmp_path / "nowhere")}}))
    out = bms("-c", str(cfg), "--check-config")
    assert out.returncode == exitcodes.CONFIG
    assert out.stderr.count("\n") == 1 and "nowhere" in out.stderr, out.stderr


@pytest.mark.parametrize(("option", "where"), [
    ({"wiretap": {"archive": "{f}/archive.mbox"}}, "[wiretap] archive"),
    ({"wiretap": {"archive": "maildir:{f}/box"}}, "[wiretap] archive"),
    ({"milter": {"tempdir": "{f}/save"}}, "[milter] tempdir"),
])
def test_unwritable_archive_or_tempdir_is_one_line_at_startup(
        tmp_path: Path, option: dict[str, dict[str, str]], where: str) -> None:
    """Found at startup, not weeks later: the line names the option, the path
    and the user bms runs as (here the paths lie under a regular file)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    sections = {k: {o: v.format(f=blocker) for o, v in opts.items()}
                for k, opts in option.items()}
    cfg = tmp_path / "c.cfg"
    cfg.write_text(config_text({"milter": {"socket": "inet:0@127.0.0.1",
                                           "datadir": str(tmp_path)},
                                "spf": {"access_file": ""}} | sections))
    out = bms("-c", str(cfg), "--check-config")
    assert out.returncode == exitcodes.CONFIG, out
    assert out.stderr.count("\n") == 1, out.stderr
    assert where in out.stderr and str(blocker) in out.stderr, out.stderr
    assert f"user {pwd.getpwuid(os.geteuid()).pw_name}" in out.stderr, out.stderr


# --- the running daemon ------------------------------------------------------------

def test_daemon_logs_each_decision_then_stops_on_sigterm(daemon: BmsDaemon) -> None:
    with mta(daemon) as m:
        assert m.connect(b"pc1.example.net", "192.0.2.7") == R.CONTINUE
        assert m.command(cmd.Helo(b"pc1.example.net\n\x1b[31mEVIL")) == R.CONTINUE
        assert m.command(cmd.Mail((b"<alice@example.net>",)), [(b"i", b"QUEUE1")]) \
            == R.CONTINUE
        for rcpt in (b"<bob@example.org>", b"<carol@example.org>"):
            assert m.command(cmd.Rcpt((rcpt,))) == R.CONTINUE
        assert m.command(cmd.Data()) == R.CONTINUE
        m.send(cmd.Header(b"Subject", b"hello"))  # no reply: bms asks for NR_HDR
        assert m.command(cmd.EndOfHeaders()) == R.CONTINUE
        m.send(cmd.Body(b"Hi Bob.\r\n"))  # no reply: NR_BODY too
        m.send(cmd.EndOfMessage())
        edits, final = m.final()
        assert final == R.CONTINUE
        # Internal mail: no SPF, only the connection's iprev result.
        assert edits == [R.InsertHeader(
            0, b"Authentication-Results",
            b"mx.example.test;\n\tiprev=pass policy.iprev=192.0.2.7")]
    with mta(daemon) as m:
        assert m.connect(b"pc2.example.net", "192.0.2.8") == R.CONTINUE
        assert m.command(cmd.Helo(b"pc2.example.net")) == R.CONTINUE
        reply = m.command(cmd.Mail((b"<pc@zombie.example>",)))
        assert rejected(reply, b"550 5.7.1"), reply
    assert daemon.stop() == 0
    lines = daemon.lines()
    messages = [msg for _, msg in lines]
    assert any("smtpd_milters = inet:127.0.0.1:" in m for m in messages)
    first = daemon.connection_of("connect from pc1.example.net")
    assert first[0] == "connect from pc1.example.net at (192.0.2.7, 4000) INTERNAL"
    # Untrusted text is escaped: no line break or terminal escape reaches the log.
    assert first[1] == "hello from pc1.example.net\\n\\x1b[31mEVIL"
    assert first[-2:] == ["ACCEPT: 2 recipients, queue id QUEUE1",
                          "close: session from pc1.example.net at 192.0.2.7 ended"]
    second = daemon.connection_of("connect from pc2.example.net")
    assert "REJECT: zombie PC at 192.0.2.8 sending MAIL FROM pc@zombie.example" in second
    ids = [cid for cid, msg in lines if "connect from pc" in msg]
    assert len(set(ids)) == 2 and all(cid.isdigit() for cid in ids), ids
    assert messages[-1] == "bms stopped"


def test_connection_ids_stay_unique_across_restarts(daemon: BmsDaemon) -> None:
    for _ in range(2):
        with mta(daemon) as m:
            assert m.connect(b"pc.example.net", "192.0.2.7") == R.CONTINUE
        daemon.stop()
        daemon.start()
    ids = [cid for cid, msg in daemon.lines() if msg.startswith("connect from")]
    assert len(ids) == 2 and len(set(ids)) == 2, ids


def test_sighup_reloads_config_and_access_and_keeps_the_old_on_error(
        daemon: BmsDaemon) -> None:
    def helo(name: bytes) -> R.Reply:
        with mta(daemon) as m:
            assert m.connect(b"[198.51.100.9]", "198.51.100.9") == R.CONTINUE
            return m.command(cmd.Helo(name))

    def auth_mail(user: bytes) -> R.Reply:
        with mta(daemon) as m:
            assert m.connect(b"pc.example.net", "192.0.2.7") == R.CONTINUE
            assert m.command(cmd.Helo(b"pc.example.net")) == R.CONTINUE
            return m.command(cmd.Mail((b"<alice@example.net>",)),
                             [(b"{auth_authen}", user)])

    assert rejected(helo(b"mx.example.test"), b"550")
    assert helo(b"mx2.example.test") == R.CONTINUE
    assert auth_mail(b"alice") == R.CONTINUE
    # A new hello_blacklist and a new access entry, then SIGHUP.
    sections = {name: dict(opts) for name, opts in daemon.sections.items()}
    sections["milter"]["hello_blacklist"] = "mx2.example.test"
    daemon.write_config(config_text(sections))
    daemon.access.write_text(ACCESS + "SMTP-Auth:alice@example.net REJECT\n")
    start = len(daemon.messages())
    daemon.reload()
    daemon.wait_log("RELOAD:", start=start)
    assert rejected(helo(b"mx2.example.test"), b"550")
    assert helo(b"mx.example.test") == R.CONTINUE
    assert rejected(auth_mail(b"alice"), b"550 5.7.1")
    # A broken config is refused; the one loaded before stays in force.
    sections["milter"]["max_demerits"] = "lots"
    daemon.write_config(config_text(sections))
    start = len(daemon.messages())
    daemon.reload()
    refused = daemon.wait_log("RELOAD REFUSED", start=start)
    assert "max_demerits" in refused
    assert rejected(helo(b"mx2.example.test"), b"550")
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_a_signal_as_soon_as_bms_listens_does_not_end_it(tmp_path: Path) -> None:
    """SIGHUP and SIGUSR1 between the socket's listen and the daemon's
    handlers (an init script's reload, logrotate's postrotate) are ignored,
    not the default action that ends the process.  A trusted relay named by
    a host name holds bms there: the name is looked up (at a nameserver
    that never answers) after the listen, before the handlers."""
    sections = {name: dict(opts) for name, opts in BASE.items()}
    sections["milter"]["trusted_relay"] = "relay.example.test"
    d = BmsDaemon(sections, ACCESS, directory=str(tmp_path))
    try:
        d.start()  # returns as soon as the port accepts a connection
        assert d.proc is not None
        for sig in (signal.SIGHUP, signal.SIGUSR1):
            assert handled(d.proc.pid, sig), sig  # ignored or caught, never the default
            d.proc.send_signal(sig)
        d.wait_log("bms starting")
        with mta(d) as m:
            assert m.connect(b"pc1.example.net", "192.0.2.7") == R.CONTINUE
        assert d.proc.poll() is None
    finally:
        assert d.stop() == 0
        d.cleanup()


def handled(pid: int, signum: int) -> bool:
    """``signum`` is ignored or caught by ``pid`` (/proc SigIgn, SigCgt)."""
    bit = 1 << (signum - 1)
    with open(f"/proc/{pid}/status") as status:
        return any(line.startswith(("SigIgn:", "SigCgt:")) and int(line.split()[1], 16) & bit
                   for line in status)
