"""Per-connection and per-message state across real SMTP sessions: several
messages on one connection, RSET in the middle of a transaction, and the
client address the MTA gives to ``connect`` (IPv4, IPv6, no address)."""

from __future__ import annotations

import ast
import hashlib
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
from milters.feature_milter import REPLACED_BODY, FeatureMilter
from testbed import Sendmail, Transaction, make_message, wait_for

from .conftest import MtaPath, new_helo

pytestmark = pytest.mark.e2e


def test_several_messages_on_one_connection(path: MtaPath) -> None:
    """Three messages in one session: each one carries its own envelope, body
    and edits, and the per-connection counter goes 1, 2, 3."""
    helo = new_helo()
    smtp = path.connect(helo)
    plan = [
        ("first@example.test", ["body@example.test", "one@example.test"], "first body\n"),
        ("second@example.test", ["two@example.test"], "second body\n"),
        ("third@example.test", ["chgfrom@example.test", "three@example.test"], "third body\n"),
    ]
    sent = []
    for sender, rcpts, body in plan:
        mid, msg = make_message(body=body, sender=sender)
        t = smtp.transaction(sender, rcpts, msg)
        sent.append((mid, t))

    for n, ((sender, rcpts, body), (mid, t)) in enumerate(zip(plan, sent, strict=True), 1):
        m = path.stored(t, mid)
        assert m.get("X-Feature-Msgno") == str(n)
        assert m.get("X-Feature-Rcpts") == ",".join(rcpts)
        assert m.get("X-Feature-From") == sender
        assert m.get("X-Feature-Helo") == helo
        assert m.get("X-Feature-Aborted") == "none"
        wire = body.replace("\n", "\r\n").encode()
        assert m.get("X-Feature-Body") == f"{len(wire)} {hashlib.sha256(wire).hexdigest()}"
        assert sorted(m.recipients) == sorted(rcpts)
        if n == 1:
            assert m.text == REPLACED_BODY.decode().replace("\r\n", "\n")
        else:
            assert m.text == body  # message 1's replacement did not stick
        assert m.sender == ("changed-sender@example.test" if n == 3 else sender)


def test_rset_discards_the_transaction(path: MtaPath) -> None:
    """RSET after MAIL and RCPT: the milter gets abort(), and nothing of the
    aborted transaction leaks into the next message of the session."""
    helo = new_helo()
    smtp = path.connect(helo)
    aborted = smtp.transaction("aborted@example.test",
                               ["gone1@example.test", "body@example.test"], None)
    assert aborted.accepted == ["gone1@example.test", "body@example.test"]
    assert smtp.reset().code == 250

    mid, msg = make_message(body="kept body\n", sender="kept@example.test")
    t = smtp.transaction("kept@example.test", ["kept@example.test"], msg)
    m = path.stored(t, mid)

    assert m.get("X-Feature-Aborted") == "gone1@example.test,body@example.test"
    assert m.get("X-Feature-Rcpts") == "kept@example.test"
    assert m.get("X-Feature-From") == "kept@example.test"
    assert m.get("X-Feature-Msgno") == "1"
    assert m.recipients == ["kept@example.test"]
    assert m.text == "kept body\n"  # body@ of the aborted transaction had no effect
    names = [e.name for e in FeatureMilter.events_for(helo)]
    assert names.index("abort") < names.index("eom"), names


def test_client_address(path: MtaPath) -> None:
    """connect() gets the family and address of the SMTP client: the TCP peer
    for a listening MTA, none for sendmail -bs on pipes."""
    smtp = path.connect()
    mid, msg = make_message()
    t = smtp.transaction("sender@example.test", ["ok@example.test"], msg)
    m = path.stored(t, mid)
    family, hostaddr = _client(m.get("X-Feature-Client"))

    if path.has_tcp_client:
        assert family == "AF_INET"
        assert hostaddr == smtp.local_address == ("127.0.0.1", smtp.local_address[1])
    else:
        assert (family, hostaddr) == ("0", None)  # sendmail: SMFIA_UNKNOWN


@pytest.mark.parametrize("transport", ["pipe", "socketpair"])
def test_sendmail_bs_client_address(sendmails: dict[str, Sendmail], transport: str) -> None:
    """sendmail -bs reports an unknown-family client on pipes and a unix-domain
    client (no path) on a socket, as under inetd."""
    sm = sendmails["inet"]
    smtp = sm.bs_session(transport=transport)
    try:
        smtp.ehlo(new_helo())
        mid, msg = make_message()
        t = smtp.transaction("sender@example.test", ["ok@example.test"], msg)
    finally:
        smtp.close_politely()
    assert t.queue_id
    m = sm.queued(t.queue_id)
    assert m.message_id == mid
    expected = ("0", None) if transport == "pipe" else ("AF_UNIX", "")
    assert _client(m.get("X-Feature-Client")) == expected


@pytest.mark.parametrize("path", ["postfix-inet", "sendmail-bD-inet", "sendmail-bD-unix"],
                         indirect=True)
def test_ipv6_client_address(path: MtaPath) -> None:
    """A client on ::1: connect() gets AF_INET6 and ('::1', port, 0, 0).
    (sendmail sends "IPv6:::1", which the framework must strip; Postfix sends
    the bare address.)"""
    smtp = path.connect(host="::1")
    mid, msg = make_message()
    t = smtp.transaction("sender@example.test", ["ok@example.test"], msg)
    m = path.stored(t, mid)
    family, hostaddr = _client(m.get("X-Feature-Client"))

    port = smtp.local_address[1]
    assert smtp.local_address[0] == "::1"
    assert family == socket.AF_INET6.name
    assert hostaddr == ("::1", port, 0, 0)


def _client(value: str | None) -> tuple[str, object]:
    """The X-Feature-Client header: (family name, hostaddr)."""
    assert value is not None
    family, _, addr = " ".join(value.split()).partition(" ")
    return family, ast.literal_eval(addr)


def test_close_once_per_connection(path: MtaPath) -> None:
    """When the SMTP session ends, the milter connection ends too: close() is
    called exactly once, after every other callback of that connection."""
    helo = new_helo()
    smtp = path.connect(helo)
    for n in range(2):
        mid, msg = make_message()
        t = smtp.transaction("sender@example.test", [f"n{n}@example.test"], msg)
        path.stored(t, mid)
    path.close()  # QUIT

    def closed() -> list[str] | None:
        names = [e.name for e in FeatureMilter.events_for(helo)]
        return names if "close" in names else None

    names = wait_for(closed, 20, f"close() of the connection that said HELO {helo}")
    assert names.count("close") == 1, names
    assert names[-1] == "close", names
    assert names.count("eom") == 2, names


@pytest.mark.parametrize("path", ["postfix-inet", "postfix-unix", "sendmail-bD-inet",
                                  "sendmail-bD-unix"], indirect=True)
def test_parallel_sessions(path: MtaPath) -> None:
    """Eight SMTP sessions at once, three messages each, interleaved: every
    milter connection keeps its own state (HELO, message counter, envelope)."""
    sessions = 8
    helos = [new_helo() for _ in range(sessions)]
    clients = [path.connect(h) for h in helos]
    sent: list[tuple[int, int, str, Transaction]] = []

    def send(i: int, n: int) -> None:
        mid, msg = make_message(body=f"session {i} message {n}\n",
                                sender=f"s{i}@example.test")
        t = clients[i].transaction(f"s{i}@example.test", [f"r{i}-{n}@example.test"], msg)
        sent.append((i, n, mid, t))

    for n in range(1, 4):
        with ThreadPoolExecutor(sessions) as pool:
            list(pool.map(lambda i, n=n: send(i, n), range(sessions)))

    assert len(sent) == sessions * 3
    for i, n, mid, t in sent:
        m = path.stored(t, mid)
        assert m.get("X-Feature-Helo") == helos[i]
        assert m.get("X-Feature-Msgno") == str(n)
        assert m.get("X-Feature-Rcpts") == f"r{i}-{n}@example.test"
        assert m.get("X-Feature-From") == f"s{i}@example.test"
        assert m.text == f"session {i} message {n}\n"
