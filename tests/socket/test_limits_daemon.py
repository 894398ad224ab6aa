"""The daemon's limits (issue 13), through the real ``bms`` over its socket:
a session and a message deadline that trickling bytes do not extend, a cap
on concurrent MTA connections, a cap on argument lengths."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mtaclient import MtaClient
from testbed.bmsd import BmsDaemon
from testbed.waiting import wait_for

from Milter.protocol import commands as cmd
from Milter.protocol import replies as R

LIMITS = {
    "milter": {"internal_connect": "192.0.2.0/24", "internal_domains": "example.net",
               "session_deadline": "4", "message_deadline": "2", "max_connections": "3",
               "max_argument_length": "1000"},
    "dns": {"nameservers": "127.0.0.1:9", "timeout": "0.5", "lifetime": "1"},
}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[BmsDaemon]:
    with BmsDaemon(LIMITS, "SPF-Pass: OK\n", directory=str(tmp_path)) as d:
        yield d


def connected(d: BmsDaemon) -> MtaClient:
    client = MtaClient(("127.0.0.1", d.port), timeout=30)
    client.negotiate()
    assert client.connect(b"pc.example.net", "192.0.2.7") == R.CONTINUE
    return client


def trickle(m: MtaClient, data: bytes, pause: float = 0.25) -> bool:
    """Send ``data`` a byte at a time; True when the milter closed the
    connection before all of it was sent (each byte would re-arm a plain
    receive timeout of 600 s)."""
    for i in range(len(data)):
        try:
            m.send_raw(data[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            return True
        time.sleep(pause)
    return m.closed_by_milter()


def test_a_slow_loris_is_closed_by_the_session_deadline(daemon: BmsDaemon) -> None:
    with connected(daemon) as m:
        # One HELO with a 60-byte name: 15 s at this pace, the deadline is 4 s.
        assert trickle(m, cmd.Helo(b"h" * 60).encode())
    assert daemon.wait_log("session deadline of 4s reached, closing the MTA connection")


def test_a_silent_connection_is_closed_by_the_session_deadline(daemon: BmsDaemon) -> None:
    with connected(daemon) as m:
        assert m.closed_by_milter()  # the read timeout is 600 s
    assert daemon.wait_log("session deadline of 4s reached")
    assert not any("no progress" in msg for msg in daemon.messages())


def test_a_trickled_message_is_closed_by_the_message_deadline(daemon: BmsDaemon) -> None:
    with connected(daemon) as m:
        assert m.command(cmd.Helo(b"pc.example.net")) == R.CONTINUE
        assert m.command(cmd.Mail((b"<alice@example.net>",))) == R.CONTINUE
        assert trickle(m, cmd.Rcpt((b"<bob@example.org>",)).encode())
    assert daemon.wait_log("message (from MAIL FROM) deadline of 2s reached")


def test_messages_within_the_deadlines_are_served(daemon: BmsDaemon) -> None:
    """A session of several quick messages: the message deadline starts again
    at each MAIL FROM."""
    with connected(daemon) as m:
        assert m.command(cmd.Helo(b"pc.example.net")) == R.CONTINUE
        for _ in range(3):
            assert m.command(cmd.Mail((b"<alice@example.net>",))) == R.CONTINUE
            assert m.command(cmd.Rcpt((b"<bob@example.org>",))) == R.CONTINUE
            m.send(cmd.Abort())
            time.sleep(0.8)  # 2.4 s of session: more than one message deadline


def test_connections_over_the_cap_are_refused_with_a_log_line(daemon: BmsDaemon) -> None:
    held = [connected(daemon) for _ in range(3)]
    try:
        with MtaClient(("127.0.0.1", daemon.port)) as extra:
            assert extra.closed_by_milter()  # before negotiation: the MTA's default action
        assert daemon.wait_log("connection limit: 3 MTA connections already served, "
                               "closing a new one (max_connections)")
        for m in held:  # the others are still served
            assert m.command(cmd.Helo(b"pc.example.net")) == R.CONTINUE
        # The refused one never reached the policy.
        assert sum(msg.startswith("connect from") for msg in daemon.messages()) == 3
    finally:
        held.pop().close()

    def one_more() -> bool:
        with MtaClient(("127.0.0.1", daemon.port)) as m:
            try:
                m.negotiate()
            except (EOFError, ConnectionResetError):
                return False
            return True

    try:
        wait_for(one_more, 10, "a free connection slot")
    finally:
        for m in held:
            m.close()


@pytest.mark.parametrize(("command", "what"), [
    (cmd.Helo(b"h" * 100_000), "HELO"),
    (cmd.Mail((b"<alice@example.net>", b"X-PARAM=" + b"p" * 5000)), "MAIL FROM"),
])
def test_a_too_long_argument_gets_501(daemon: BmsDaemon, command: cmd.Command,
                                      what: str) -> None:
    with connected(daemon) as m:
        if what != "HELO":
            assert m.command(cmd.Helo(b"pc.example.net")) == R.CONTINUE
        reply = m.command(command)
        assert isinstance(reply, R.ReplyCode), reply
        assert reply.text == f"501 5.5.4 {what} argument too long.".encode(), reply
        if what == "MAIL FROM":
            return
        # The connection goes on; MAIL without an accepted HELO is refused as usual.
        reply = m.command(cmd.Mail((b"<alice@example.net>",)))
        assert isinstance(reply, R.ReplyCode) and reply.text.startswith(b"550"), reply
    assert daemon.wait_log(f"REJECT: {what} argument of 100000 characters (limit 1000)")

