"""Operating bms (SPEC §7, §4a dry run), end to end: a real ``bms`` process
behind real Postfix, NSD serving the test zone, and an SMTP sink on
127.0.0.25:25 standing in for the senders' MX (CBV probes).

* Prometheus metrics scraped from a bms with two worker processes after a
  scenario through Postfix: verdicts by reason tag, callback latencies, DNS
  and CBV timings, connections back to zero, reloads, a killed worker.
* SIGTERM during a burst: an upstream Postfix relays 50 messages to a
  Postfix whose milter is bms; bms is stopped mid-burst and must exit 0
  having finished the messages it was in; the rest wait, tempfailed, in the
  upstream queue, and all arrive exactly once after a restart.
* Dry run: what would be rejected or defanged is delivered unchanged, and
  milter.log says ``DRYRUN REJECT`` / ``DRYRUN DEFANG``.
* The drain itself, on the socket tier (no MTA): idle connections are closed
  at once, a message being processed is finished.
"""

from __future__ import annotations

import email
import email.policy
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from mtaclient import MtaClient
from prometheus_client.parser import text_string_to_metric_families
from testbed import Postfix, SmtpClient, StoredMessage
from testbed.bmsd import REPO, BmsDaemon
from testbed.mail import new_message_id
from testbed.milter import RunningMilter, free_port, start_milter
from testbed.nsd import CLIENT_IP, CLIENT_PTR, INTERNAL_IP, SINK_IP, Nsd
from testbed.postfix import listening
from testbed.smtpsink import SmtpSink
from testbed.waiting import tail, wait_for

import Milter
from bmslib import exitcodes
from Milter.protocol import commands as cmd
from Milter.protocol import replies as R

e2e = pytest.mark.e2e

RECEIVER = "mx.example.test"
RCPT = "rcpt@example.test"
RCPT2 = "rcpt2@example.test"
ACCESS = """\
SPF-Pass:     OK
SPF-Fail:     REJECT
SPF-Neutral:  CBV
SPF-None:     OK
"""
BURST = 50
CBV_DELAY = 0.4  # the sink's answer to each burst probe: every message spends it in eom
DRAIN_BOUND = 30 + 10  # the server's drain_seconds, and time to exit

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# --- helpers ---------------------------------------------------------------------------

def settings(nsd: Nsd, **milter: str) -> dict[str, dict[str, str]]:
    return {
        "milter": {"internal_connect": "10.11.12.0/24", "internal_domains": "example.test",
                   "cbv_timeout": "10", **milter},
        "dns": {"nameservers": nsd.nameserver, "timeout": "1", "lifetime": "2"},
    }


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def total(found: Samples, name: str) -> float:
    return sum(v for (n, _), v in found.items() if n == name)


def message(mid: str, sender: str, subject: str = "operations test",
            rcpts: tuple[str, ...] = (RCPT,)) -> bytes:
    return (f"From: <{sender}>\r\nTo: {', '.join(f'<{r}>' for r in rcpts)}\r\n"
            f"Subject: {subject}\r\nMessage-ID: {mid}\r\n\r\n"
            f"Hello {mid}.\r\n").encode()


def client(pf: Postfix, source: str, helo: str) -> SmtpClient:
    c = SmtpClient("127.0.0.1", pf.port, source_address=(source, 0))
    code, _ = c.ehlo(helo)
    assert code == 250
    return c


def wait_for_bool(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether ``condition()`` became true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def worker_pids(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def wait_exit(daemon: BmsDaemon, timeout: float) -> int:
    proc = daemon.proc
    assert proc is not None
    try:
        return proc.wait(timeout)
    finally:
        daemon.proc = None if proc.poll() is not None else proc


# --- fixtures --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sink(nsd: Nsd) -> Iterator[SmtpSink]:
    with SmtpSink(SINK_IP, 25, name="mx.sink.test") as s:
        yield s


@pytest.fixture(autouse=True)
def fresh_sink(request: pytest.FixtureRequest) -> None:
    if "sink" in request.fixturenames:
        request.getfixturevalue("sink").reset()


# --- metrics ---------------------------------------------------------------------------

@e2e
def test_metrics_of_two_workers_after_a_scenario_through_postfix(nsd: Nsd,
                                                                 sink: SmtpSink) -> None:
    port = free_port()
    sections = settings(nsd, workers="2")
    sections["metrics"] = {"listen": f"127.0.0.1:{port}"}
    with BmsDaemon(sections, ACCESS) as bms, Postfix(milters=bms.postfix_spec) as pf:
        assert listening("127.0.0.1", port)
        mids = [new_message_id(f"metrics-{i}") for i in range(4)]
        outside = client(pf, CLIENT_IP, CLIENT_PTR)
        for i, mid in enumerate(mids[:3]):
            t = outside.transaction(f"m{i}@pass.test", [RCPT], message(mid, f"m{i}@pass.test"))
            assert t.data is not None and t.data.code == 250, t
        t = outside.transaction("probed@neutral.test", [RCPT],
                                message(mids[3], "probed@neutral.test"))
        assert t.data is not None and t.data.code == 250, t  # after a CBV probe
        t = outside.transaction("a@fail.test", [RCPT], message(new_message_id(), "a@fail.test"))
        assert t.data is not None and t.data.code == 550, t  # SPF fail, said at DATA
        outside.close_politely()
        inside = client(pf, INTERNAL_IP, "pc17.example.test")
        t = inside.transaction("pc@zombie.test", [RCPT], None)
        assert t.mail.code == 550, t
        inside.close_politely()
        pf.wait_for_messages(4, lambda m: m.message_id in mids)

        def closed() -> Samples | None:
            found = scrape(port)
            done = value(found, "bms_connections_total") == 2 and \
                value(found, "bms_active_connections") == 0
            return found if done else None

        # Postfix closes its milter connections after QUIT, on its own time.
        found = wait_for(closed, 20, "both milter connections closed")
        assert value(found, "bms_messages_total", verdict="accept", reason="ok") == 4
        assert value(found, "bms_messages_total", verdict="reject", reason="zombie PC") == 1
        assert value(found, "bms_messages_total", verdict="reject", reason="SPF fail") == 1
        assert total(found, "bms_messages_total") == 6  # nothing else was counted
        count = "bms_callback_duration_seconds_count"
        assert value(found, count, callback="connect") == 2
        assert value(found, count, callback="envfrom") == 6
        assert value(found, count, callback="eom") == 4
        assert value(found, count, callback="header") > 0
        assert value(found, "bms_callback_duration_seconds_bucket",
                     callback="eom", le="+Inf") == 4
        assert value(found, "bms_dns_query_duration_seconds_count",
                     rdtype="TXT", outcome="answer") > 0
        assert value(found, "bms_cbv_duration_seconds_count",
                     kind="probe", outcome="accepted") == 1

        # SIGHUP: each worker reloads, and counts it.
        assert bms.proc is not None
        bms.reload()
        wait_for(lambda: value(scrape(port), "bms_config_reloads_total", result="ok") == 2,
                 20, "two reloads counted", detail=lambda: tail(str(bms.log_file)))

        # A worker dies: the parent starts another, and still serves every count.
        victim = worker_pids(bms.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        bms.wait_log("exited; starting a new one")
        wait_for(lambda: len(worker_pids(bms.proc.pid)) == 2 if bms.proc else False, 10,
                 "a new worker")
        after = scrape(port)
        assert value(after, "bms_messages_total", verdict="accept", reason="ok") == 4
        assert value(after, "bms_active_connections") == 0
        assert total(after, "bms_messages_total") == 6

        metrics_dir = Path(bms.sections["milter"]["datadir"]) / "metrics"
        assert any(metrics_dir.glob("*.db"))
        assert bms.stop() == 0
        assert not listening("127.0.0.1", port)
        assert not any(metrics_dir.glob("*.db"))  # removed at exit (and at start)


@e2e
def test_metrics_port_in_use_is_one_error_line_and_exit_69(nsd: Nsd) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        sections = settings(nsd)
        sections["metrics"] = {"listen": f"127.0.0.1:{port}"}
        bms = BmsDaemon(sections, ACCESS)
        try:
            proc = subprocess.run([sys.executable, "-m", "bms", "-c", str(bms.cfg)],
                                  cwd=REPO, capture_output=True, text=True, timeout=60,
                                  check=False)
            assert proc.returncode == exitcodes.UNAVAILABLE, proc  # as the milter socket
            assert proc.stderr.splitlines() == [
                f"bms: cannot listen on 127.0.0.1:{port} for metrics: "
                "Address already in use"], proc.stderr
            assert not listening("127.0.0.1", bms.port)  # the milter socket is closed too
        finally:
            bms.cleanup()


# --- SIGTERM during a burst --------------------------------------------------------------

class RelayPostfix(Postfix):
    """An upstream MTA: relays everything over SMTP to one next hop, keeping
    what the next hop tempfails in its deferred queue until flushed."""

    def write_config(self) -> None:
        super().write_config()
        with open(self.etc / "master.cf", "a") as f:
            f.write("smtp      unix  -       -       n       -       -       smtp\n"
                    "scache    unix  -       -       n       -       1       scache\n"
                    "pickup    unix  n       -       n       60      1       pickup\n")

    def queue(self, name: str) -> list[Path]:
        base = self.spool / name
        return [p for p in base.rglob("*") if p.is_file()] if base.is_dir() else []

    def flush(self) -> None:
        """``postqueue -f``: retry every deferred message now."""
        proc = subprocess.run([POSTQUEUE, "-c", str(self.etc), "-f"], capture_output=True,
                              text=True, timeout=30, check=False)
        assert proc.returncode == 0, (proc, tail(str(self.maillog)))


POSTQUEUE = shutil.which("postqueue") or "/usr/sbin/postqueue"


def relay_to(mx: Postfix) -> RelayPostfix:
    return RelayPostfix(hostname="relay.example.test", domain="relay.test", main_cf={
        "relayhost": f"[127.0.0.1]:{mx.port}",
        "default_transport": "smtp",
        # bms sees an outside host with a PTR, whose mail gets SPF headers.
        "smtp_bind_address": CLIENT_IP,
        "smtp_helo_name": CLIENT_PTR,
        # A cached session whose milter connection bms closed gets 451 for every
        # message (Postfix does not reconnect a milter within an SMTP session):
        # sessions are reused for a few messages only.
        "smtp_connection_reuse_time_limit": "2s",
        # Deferred mail waits for flush(): the test decides when it is retried.
        "queue_run_delay": "300s",
        "minimal_backoff_time": "300s",
        "maximal_backoff_time": "300s",
    })


def in_flight(log: list[str]) -> bool:
    """Some messages were accepted, and one is in eom now (its CBV probe
    waits CBV_DELAY for the sink, which has not answered)."""
    accepted = sum(msg.startswith("ACCEPT") for msg in log)
    probing = sum(msg.startswith("CBV: ") and msg.endswith(" PLAIN") for msg in log)
    return accepted >= 5 and probing > accepted


def burst_ok(m: StoredMessage) -> None:
    """Delivered through bms, whole: its headers are there, the body intact."""
    spf = " ".join((m.get("Received-SPF") or "").split())
    assert spf.lower().startswith("neutral") and f"receiver={RECEIVER}" in spf, m.headers
    ar = " ".join((m.get("Authentication-Results") or "").split())
    assert ar.startswith(f"{RECEIVER};") and "spf=neutral" in ar, m.headers
    assert m.body.replace(b"\r\n", b"\n") == f"Hello {m.message_id}.\n".encode(), m.body


@e2e
def test_sigterm_during_a_burst_loses_and_duplicates_nothing(nsd: Nsd, sink: SmtpSink) -> None:
    sink.delay("RCPT", CBV_DELAY, rcpt="@neutral.test")
    with BmsDaemon(settings(nsd, workers="2"), ACCESS) as bms, \
            Postfix(milters=bms.postfix_spec) as mx, relay_to(mx) as relay:
        assert isinstance(relay, RelayPostfix)
        mids = [new_message_id(f"burst-{i}") for i in range(BURST)]
        ours = set(mids)
        for start in range(0, BURST, 10):  # five SMTP sessions to the upstream MTA
            c = SmtpClient("127.0.0.1", relay.port)
            for i in range(start, start + 10):
                sender = f"burst{i}@neutral.test"
                t = c.transaction(sender, [RCPT], message(mids[i], sender))
                assert t.data is not None and t.data.code == 250, t
            c.close_politely()
        wait_for(lambda: in_flight(bms.messages()), 30, "a message in eom after the first "
                 "ones were accepted", detail=lambda: tail(str(bms.log_file)))

        assert bms.proc is not None
        bms.proc.send_signal(signal.SIGTERM)
        assert wait_exit(bms, DRAIN_BOUND) == 0
        log = bms.messages()
        assert log[-1] == "bms stopped"
        # The messages bms was in when told to stop were finished, not cut.
        first_stop = next(i for i, msg in enumerate(log) if msg.startswith("stopping: "))
        assert any(msg.startswith("ACCEPT") for msg in log[first_stop:]), log[first_stop:]

        # Upstream, every attempt from now on is tempfailed: its messages settle
        # in the deferred queue.  Nothing bounced.
        wait_for(lambda: not relay.queue("incoming") and not relay.queue("active"), 30,
                 "the upstream queue to settle", detail=lambda: tail(str(relay.maillog)))
        mx.wait_idle()
        delivered = [m for m in mx.delivered() if m.message_id in ours]
        ids = [m.message_id for m in delivered]
        assert len(ids) == len(set(ids)), "a message was delivered twice"
        for m in delivered:
            burst_ok(m)
        deferred = len(relay.queue("deferred"))
        assert len(delivered) + deferred == BURST, (len(delivered), deferred)
        assert deferred > 0 and len(delivered) >= 5  # SIGTERM came mid-burst
        assert "status=bounced" not in relay.log()

        # bms is back: the retried messages all arrive, each exactly once.
        sink.reset()
        bms.start()

        def flushed() -> bool:
            relay.flush()  # again while some still meet a session bms had left
            return wait_for_bool(lambda: not relay.queued(), 3)

        wait_for(flushed, 60, "the upstream queue to empty", interval=0,
                 detail=lambda: f"{relay.queued()}\n{tail(str(relay.maillog))}")
        mx.wait_idle()
        delivered = [m for m in mx.delivered() if m.message_id in ours]
        assert sorted(str(m.message_id) for m in delivered) == sorted(mids)
        for m in delivered:
            burst_ok(m)
        assert "status=bounced" not in relay.log()


# --- dry run ---------------------------------------------------------------------------

def exe_message(mid: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "sender@pass.test"
    msg["To"] = RCPT
    msg["Subject"] = "the invoice"
    msg["Message-ID"] = mid
    msg.set_content("Hello, the program is attached.\n")
    msg.add_attachment(b"MZ\x90\x00 pretend program " + os.urandom(32),
                       maintype="application", subtype="octet-stream", filename="invoice.exe")
    return msg.as_bytes(policy=email.policy.SMTP)


def body_of(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").partition(b"\n\n")[2]


@e2e
def test_dry_run_delivers_what_it_would_refuse_or_defang(nsd: Nsd) -> None:
    port = free_port()
    sections = settings(nsd, dry_run="1")
    sections["metrics"] = {"listen": f"127.0.0.1:{port}"}
    with BmsDaemon(sections, ACCESS) as bms, Postfix(milters=bms.postfix_spec) as pf:
        zombie, spf_fail, exe = (new_message_id(t) for t in ("zombie", "spffail", "exe"))
        sent: dict[str, bytes] = {}
        inside = client(pf, INTERNAL_IP, "pc17.example.test")
        sent[zombie] = message(zombie, "pc@zombie.test", rcpts=(RCPT, RCPT2))
        t = inside.transaction("pc@zombie.test", [RCPT, RCPT2], sent[zombie])
        assert t.mail.code == 250 and t.data is not None and t.data.code == 250, t
        inside.close_politely()
        outside = client(pf, CLIENT_IP, CLIENT_PTR)
        sent[spf_fail] = message(spf_fail, "a@fail.test")
        t = outside.transaction("a@fail.test", [RCPT], sent[spf_fail])
        assert t.data is not None and t.data.code == 250, t
        sent[exe] = exe_message(exe)
        t = outside.transaction("exe@pass.test", [RCPT], sent[exe])
        assert t.data is not None and t.data.code == 250, t
        outside.close_politely()

        pf.wait_for_messages(4, lambda m: m.message_id in sent)  # zombie: two recipients
        got = {mid: pf.message(mid) for mid in sent}
        assert got[zombie].recipients == sorted([RCPT, RCPT2])
        assert got[zombie].sender == "pc@zombie.test"
        assert got[spf_fail].recipients == [RCPT] and got[exe].recipients == [RCPT]
        for mid, data in sent.items():
            assert got[mid].body.replace(b"\r\n", b"\n") == body_of(data), mid
        # Informational headers only: SPF's verdict is recorded, nothing refused.
        assert (got[spf_fail].get("Received-SPF") or "").lower().startswith("fail")
        assert b"WARNING.TXT" not in got[exe].body

        bms.wait_log("DRYRUN REJECT: zombie PC at 10.11.12.13 sending MAIL FROM pc@zombie.test")
        line = bms.wait_log("DRYRUN REJECT: SPF fail")
        assert "a@fail.test" in line, line
        line = bms.wait_log("DRYRUN DEFANG: ")
        assert "invoice.exe" in line and ".exe" in line, line
        log = bms.messages()
        assert not any(msg.startswith(("REJECT", "DEFANG", "TEMPFAIL", "DISCARD"))
                       for msg in log), log
        tempdir = Path(bms.sections["milter"]["tempdir"])
        assert not tempdir.exists() or not any(tempdir.iterdir())  # no original saved

        found = scrape(port)
        assert value(found, "bms_messages_total", verdict="dryrun_reject",
                     reason="zombie PC") == 1
        assert value(found, "bms_messages_total", verdict="dryrun_reject",
                     reason="SPF fail") == 1
        assert value(found, "bms_messages_total", verdict="accept", reason="ok") == 3
        assert total(found, "bms_messages_total") == 5


# --- the drain, on the socket tier -------------------------------------------------------

def slow_eom_milter(release: threading.Event) -> type[Milter.Base]:
    """Mail from <slow@…> stays in eom until ``release`` is set."""
    class Slow(Milter.Base):
        sender = ""

        def envfrom(self, f: str, *params: str) -> int:
            self.sender = f
            return Milter.CONTINUE

        def eom(self) -> int:
            if self.sender.startswith("<slow@"):
                release.wait(10)
            self.addheader("X-Finished", "yes")
            return Milter.CONTINUE

    return Slow


def transaction(mta: MtaClient, sender: bytes) -> None:
    """MAIL, RCPT and end of message (its reply is read by the caller)."""
    for c in (cmd.Mail((sender,)), cmd.Rcpt((b"<c@d>",))):
        assert mta.command(c) == R.CONTINUE
    mta.send(cmd.EndOfMessage())


@pytest.fixture
def mta_clients() -> Iterator[list[MtaClient]]:
    """MtaClients to close after the test."""
    clients: list[MtaClient] = []
    yield clients
    for c in clients:
        c.close()


def test_stop_closes_idle_connections_and_finishes_a_message_in_progress(
        mta_clients: list[MtaClient]) -> None:
    release = threading.Event()
    milter: RunningMilter = start_milter(slow_eom_milter(release), drain_seconds=20)

    def connected() -> MtaClient:
        c = MtaClient(milter.address)
        mta_clients.append(c)
        c.negotiate()
        c.connect()
        return c

    try:
        idle = connected()
        done = connected()  # its message was finished before the stop
        transaction(done, b"<fast@b>")
        assert done.final()[1] == R.CONTINUE
        busy = connected()
        transaction(busy, b"<slow@b>")  # eom waits for release
        wait_for(lambda: milter.server.active_connections() == 3, 5, "three connections")
        stopper = threading.Thread(target=milter.server.stop)
        stopper.start()
        # The idle ones are closed at once (the MTA tempfails their next
        # message); the one in eom goes on.
        assert idle.closed_by_milter()
        assert done.closed_by_milter()
        assert milter.thread.is_alive()
        release.set()
        edits, final = busy.final()
        assert final == R.CONTINUE
        assert edits == [R.AddHeader(b"X-Finished", b"yes")]
        assert busy.closed_by_milter()  # and then it is closed too, between messages
        milter.thread.join(10)
        assert not milter.thread.is_alive()
        stopper.join(10)
    finally:
        release.set()
        milter.stop()
