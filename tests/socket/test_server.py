"""Socket tier: the real server, a scripted MTA client, real sockets."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from mtaclient import MtaClient

import Milter
from Milter.protocol import commands as cmd
from Milter.protocol import constants as C
from Milter.protocol import replies as R
from Milter.server import SocketSpecError, parse_socket_spec

Recorder = list[tuple[Any, ...]]


def recording_milter(events: Recorder, **behaviour: Any) -> type[Milter.Base]:
    class Recording(Milter.Base):
        def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
            events.append(("connect", hostname, family, hostaddr))
            return Milter.CONTINUE

        def envfrom(self, f: str, *params: str) -> int:
            events.append(("envfrom", f))
            if behaviour.get("raise_in") == "envfrom":
                raise RuntimeError("boom in envfrom")
            return Milter.CONTINUE

        def envrcpt(self, to: str, *params: str) -> int:
            events.append(("envrcpt", to))
            if "reject" in to:
                self.setreply("550", "5.7.1", "not here", "nor there")
                return Milter.REJECT
            return Milter.CONTINUE

        def header(self, field: str, value: str) -> int:
            return Milter.CONTINUE

        def eom(self) -> int:
            events.append(("eom", self.getsymval("i")))
            if behaviour.get("slow_eom"):
                behaviour["slow_eom"].wait(10)
            if behaviour.get("big_body"):
                self.replacebody(behaviour["big_body"])
            self.addheader("X-Seen", "yes")
            return Milter.ACCEPT

        def abort(self) -> int:
            events.append(("abort",))
            return Milter.CONTINUE

        def close(self) -> int:
            events.append(("close",))
            return Milter.CONTINUE

    return Recording


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


@pytest.mark.parametrize("spec_kind", ["inet", "inet6", "unix"])
def test_full_transaction_on_each_listener(start_milter: Any, tmp_path: Path,
                                           spec_kind: str) -> None:
    events: Recorder = []
    if spec_kind == "unix":
        spec, family = f"unix:{tmp_path}/milter.sock", socket.AF_UNIX
    elif spec_kind == "inet6":
        spec, family = "inet6:0@[::1]", socket.AF_INET6
    else:
        spec, family = "inet:0@127.0.0.1", socket.AF_INET
    milter = start_milter(recording_milter(events), spec=spec)
    address = milter.address if spec_kind != "inet6" else milter.address[:2]
    with MtaClient(address, family) as mta:
        mta.negotiate()
        assert mta.connect(ip="2001:db8::7", port=2525) == R.CONTINUE
        edits, final = mta.message()
        assert final == R.ACCEPT
        assert edits == [R.AddHeader(b"X-Seen", b"yes")]
        # After an accepted message libmilter is back in HELO state, where QUIT
        # is ignored; the MTA closes the socket and close() runs once.
        mta.send(cmd.Quit())
    wait_for(lambda: ("close",) in events)
    assert events.count(("close",)) == 1
    assert events[0] == ("connect", "client.example.net", socket.AF_INET6,
                         ("2001:db8::7", 2525, 0, 0))


def test_rejected_recipient_gets_custom_multiline_text(start_milter: Any) -> None:
    milter = start_milter(recording_milter([]))
    with MtaClient(milter.address) as mta:
        mta.negotiate()
        mta.connect()
        assert mta.command(cmd.Mail((b"<a@b>",))) == R.CONTINUE
        reply = mta.command(cmd.Rcpt((b"<reject@x>",)))
        assert reply == R.ReplyCode(b"550-5.7.1 not here\r\n550 5.7.1 nor there")
        # The transaction goes on after a rejected recipient.
        assert mta.command(cmd.Rcpt((b"<ok@x>",))) == R.CONTINUE


def test_exception_in_callback_tempfails_and_next_connection_is_fine(
        start_milter: Any, caplog: pytest.LogCaptureFixture) -> None:
    events: Recorder = []
    milter = start_milter(recording_milter(events, raise_in="envfrom"))
    caplog.set_level(logging.INFO)
    with MtaClient(milter.address) as mta:
        mta.negotiate()
        mta.connect()
        reply = mta.command(cmd.Mail((b"<a@b>",)))
        assert reply == R.ReplyCode(b"451 4.3.0 pymilter: untrapped exception in testmilter")
    records = [r for r in caplog.records if "untrapped exception in envfrom" in r.getMessage()]
    assert records and records[0].exc_info is not None
    first_id = records[0].connid  # type: ignore[attr-defined]
    assert first_id not in ("", "-")
    assert "boom in envfrom" in caplog.text
    # The process and the next connection are unaffected.
    with MtaClient(milter.address) as mta:
        mta.negotiate()
        assert mta.connect() == R.CONTINUE
        assert mta.command(cmd.Mail((b"<a@b>",))) == R.ReplyCode(
            b"451 4.3.0 pymilter: untrapped exception in testmilter")
    ids = {r.connid for r in caplog.records  # type: ignore[attr-defined]
           if "untrapped exception" in r.getMessage()}
    assert len(ids) == 2 and first_id in ids  # one id per connection


@pytest.mark.parametrize(("policy", "expected"), [
    (Milter.CONTINUE, R.CONTINUE),
    (Milter.REJECT, R.ReplyCode(b"554 5.3.0 pymilter: untrapped exception in testmilter")),
])
def test_exception_policies(start_milter: Any, policy: int, expected: R.Reply) -> None:
    milter = start_milter(recording_milter([], raise_in="envfrom"), exception_policy=policy)
    with MtaClient(milter.address) as mta:
        mta.negotiate()
        mta.connect()
        assert mta.command(cmd.Mail((b"<a@b>",))) == expected


def test_garbage_ends_only_that_session(start_milter: Any,
                                        caplog: pytest.LogCaptureFixture) -> None:
    events: Recorder = []
    milter = start_milter(recording_milter(events))
    with MtaClient(milter.address) as bad, MtaClient(milter.address) as good:
        good.negotiate()
        good.connect()
        bad.negotiate()
        bad.connect()
        bad.send_raw(b"\x00\x00\x00\x05Zjunk")  # unknown command byte
        assert bad.closed_by_milter()
        _edits, final = good.message()
        assert final == R.ACCEPT
    wait_for(lambda: events.count(("close",)) >= 1)
    assert "unknown command byte" in caplog.text


def test_oversized_packet_ends_session_but_large_header_is_accepted(start_milter: Any) -> None:
    milter = start_milter(recording_milter([]))
    with MtaClient(milter.address) as mta:
        mta.negotiate()
        mta.connect()
        mta.command(cmd.Mail((b"<a@b>",)))
        mta.command(cmd.Rcpt((b"<c@d>",)))
        # Postfix sends headers above libmilter's 65535 limit; we take up to 1 MiB.
        assert mta.command(cmd.Header(b"X-Long", b"x" * 200_000)) == R.CONTINUE
        mta.send_raw((2 * 1024 * 1024).to_bytes(4, "big") + b"L")
        assert mta.closed_by_milter()


def test_large_body_replacement_is_split_and_contiguous(start_milter: Any) -> None:
    body = bytes(range(256)) * 1000  # 256000 bytes
    milter = start_milter(recording_milter([], big_body=body))
    with MtaClient(milter.address) as mta:
        mta.negotiate()
        mta.connect()
        edits, final = mta.message()
    chunks = [e for e in edits if isinstance(e, R.ReplaceBody)]
    assert [len(c.chunk) for c in chunks] == [65535, 65535, 65535, 59395]
    assert b"".join(c.chunk for c in chunks) == body
    # Other edits first, then one run of body packets, then the verdict (Postfix rule).
    assert edits[0] == R.AddHeader(b"X-Seen", b"yes")
    assert all(isinstance(e, R.ReplaceBody) for e in edits[1:])
    assert final == R.ACCEPT


def test_read_timeout_aborts_and_closes(start_milter: Any) -> None:
    events: Recorder = []
    milter = start_milter(recording_milter(events), timeout=0.3)
    with MtaClient(milter.address) as mta:
        mta.negotiate()
        mta.connect()
        mta.command(cmd.Mail((b"<a@b>",)))
        assert mta.closed_by_milter()  # the milter gave up waiting
    wait_for(lambda: ("close",) in events)
    assert events[-2:] == [("abort",), ("close",)]


def test_eof_mid_transaction_aborts_then_closes_once(start_milter: Any) -> None:
    events: Recorder = []
    milter = start_milter(recording_milter(events))
    with MtaClient(milter.address) as mta:
        mta.negotiate()
        mta.connect()
        mta.command(cmd.Mail((b"<a@b>",)))
        mta.send_raw(b"\x00\x00\x00\x09R<x@y")  # cut inside a packet
    wait_for(lambda: ("close",) in events)
    time.sleep(0.1)
    assert events.count(("close",)) == 1
    assert events[-2:] == [("abort",), ("close",)]


def test_stop_lets_running_session_finish(start_milter: Any) -> None:
    release = threading.Event()
    events: Recorder = []
    milter = start_milter(recording_milter(events, slow_eom=release))
    mta = MtaClient(milter.address)
    mta.negotiate()
    mta.connect()
    for c in (cmd.Mail((b"<a@b>",)), cmd.Rcpt((b"<c@d>",))):
        mta.command(c)
    mta.send(cmd.EndOfMessage())
    wait_for(lambda: any(e[0] == "eom" for e in events))
    stopper = threading.Thread(target=milter.server.stop)
    stopper.start()
    time.sleep(0.2)
    assert milter.thread.is_alive()  # draining: the session in eom is still served
    with pytest.raises(OSError):
        MtaClient(milter.address, timeout=1).negotiate()
    release.set()
    _edits, final = mta.final()
    assert final == R.ACCEPT
    mta.close()
    milter.thread.join(5)
    assert not milter.thread.is_alive()


def test_unix_socket_stale_removal_and_cleanup(start_milter: Any, tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # leaves a socket file nobody listens on
    milter = start_milter(recording_milter([]), spec=f"unix:{path}")
    with MtaClient(str(path), socket.AF_UNIX) as mta:
        assert mta.negotiate().version == 6
    milter.stop()
    assert not path.exists()


def test_unix_path_that_is_not_a_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "regular"
    path.write_text("precious")
    server = Milter.server.MilterServer(f"unix:{path}", lambda send, cid: None)  # type: ignore
    with pytest.raises(OSError, match="not a socket"):
        server.open()
    assert path.read_text() == "precious"


def test_workers_share_the_socket(start_milter: Any) -> None:
    milter = start_milter(recording_milter([]), workers=2)
    replies = []
    for _ in range(8):
        with MtaClient(milter.address) as mta:
            mta.negotiate()
            mta.connect()
            replies.append(mta.message()[1])
    assert replies == [R.ACCEPT] * 8
    children = list(milter.server._children)
    assert len(children) == 2
    milter.stop()
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize(("spec", "message"), [
    ("inet:127.0.0.1:8894", "Postfix"),
    ("inet:99999@127.0.0.1", "out of range"),
    ("unix:relative", "absolute path"),
    ("tcp:25", "unknown socket type"),
    ("8894", "expected unix:/path"),
])
def test_bad_socket_specs_say_why(spec: str, message: str) -> None:
    with pytest.raises(SocketSpecError, match=message):
        parse_socket_spec(spec)


def test_socket_spec_forms() -> None:
    assert parse_socket_spec("inet:8894@[127.0.0.1]").address == ("127.0.0.1", 8894)
    assert parse_socket_spec("inet:8894@localhost").address == ("127.0.0.1", 8894)
    assert parse_socket_spec("inet:8894").address == ("0.0.0.0", 8894)
    assert parse_socket_spec("inet6:8894@[::1]").family == socket.AF_INET6
    assert parse_socket_spec("local:/run/x.sock").address == "/run/x.sock"
    assert parse_socket_spec("/run/x.sock").is_unix


def test_nr_emulation_against_protocol_2(start_milter: Any) -> None:
    """Trace D: the MTA cannot do NR, so we write CONTINUE for @noreply stages."""

    class NoReply(Milter.Base):
        @Milter.noreply
        def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
            return Milter.CONTINUE

        @Milter.noreply
        def envrcpt(self, to: str, *params: str) -> int:
            return Milter.CONTINUE

    milter = start_milter(NoReply)
    with MtaClient(milter.address) as mta:
        reply = mta.negotiate(version=2, actions=0x1FF, protocol=0x7F)
        # Only the NO bits of the callbacks it lacks; the NR bits are emulated.
        assert (reply.version, reply.protocol) == (2, 0x76)
        assert mta.connect() == R.CONTINUE  # faked by the framework
        mta.send(cmd.Mail((b"<a@b>",)))
        assert mta.reply() == R.CONTINUE
        assert mta.command(cmd.Rcpt((b"<c@d>",))) == R.CONTINUE
        mta.send(cmd.EndOfMessage())
        assert mta.final()[1] == R.CONTINUE


def test_nr_negotiated_means_no_reply_bytes(start_milter: Any) -> None:
    class NoReply(Milter.Base):
        @Milter.noreply
        def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
            return Milter.CONTINUE

    milter = start_milter(NoReply)
    with MtaClient(milter.address) as mta:
        reply = mta.negotiate()
        assert reply.protocol & C.SMFIP_NR_CONN
        mta.send(cmd.Connect(b"h", C.SMFIA_INET, 1, "192.0.2.1"), cmd.EndOfMessage())
        # The only reply is EOM's; nothing was written for CONNECT.
        assert mta.reply() == R.CONTINUE


def test_concurrent_connections_use_the_calls_that_keep_the_gil(
        start_milter: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """While another connection is served, reads and writes go through
    Milter.gilio first, falling back to the blocking calls when the socket
    has nothing yet or takes only part; the MTA gets the same packets either
    way.  Each outcome is forced by order, not by timing: the MTA sends its
    next command while eom() waits (so the read after the verdict finds it
    there), and the body replacement goes out in 256 KB batches, more than a
    unix socket's default send buffer takes at once."""
    from collections import Counter

    from Milter import gilio
    if not gilio.AVAILABLE:
        pytest.skip("no libc through ctypes here")
    if int(Path("/proc/sys/net/core/wmem_default").read_text()) >= 256 * 1024:
        pytest.skip("a unix socket here takes a whole 256 KB batch at once")
    calls: Counter[str] = Counter()
    real_recv, real_send = gilio.recv_now, gilio.send_now

    def recv_now(fd: int, buf: gilio.RecvBuffer) -> bytes | None:
        got = real_recv(fd, buf)
        calls["recv none" if got is None else "recv"] += 1
        return got

    def send_now(fd: int, data: bytes | bytearray) -> int:
        sent = real_send(fd, data)
        calls["send whole" if sent == len(data) else "send part"] += 1
        return sent

    monkeypatch.setattr(gilio, "recv_now", recv_now)
    monkeypatch.setattr(gilio, "send_now", send_now)
    body = bytes(range(256)) * 4096
    in_eom = threading.Event()
    events: Recorder = []
    milter = start_milter(recording_milter(events, big_body=body, slow_eom=in_eom),
                          spec=f"unix:{tmp_path}/m.sock")
    with MtaClient(milter.address, socket.AF_UNIX) as first, \
            MtaClient(milter.address, socket.AF_UNIX) as second:
        first.negotiate()
        second.negotiate()  # two connections served from here on
        for mta in (first, second):
            assert mta.connect() == R.CONTINUE
        for command in (cmd.Mail((b"<a@example.net>",)), cmd.Rcpt((b"<b@example.org>",)),
                        cmd.EndOfHeaders()):
            assert first.command(command) == R.CONTINUE
        first.send(cmd.EndOfMessage())
        wait_for(lambda: any(e[0] == "eom" for e in events))  # eom() is running
        first.send(cmd.Abort(), cmd.Mail((b"<c@example.net>",)))
        in_eom.set()  # eom() returns only now: ABORT and MAIL are already there
        edits, final = first.final()
        assert final == R.ACCEPT
        assert edits[0] == R.AddHeader(b"X-Seen", b"yes")
        assert b"".join(e.chunk for e in edits if isinstance(e, R.ReplaceBody)) == body
        assert first.reply() == R.CONTINUE  # the MAIL sent during eom
        edits, final = second.message()
        assert final == R.ACCEPT
    assert calls["recv"] > 0 and calls["send whole"] > 0 and calls["send part"] > 0, calls
