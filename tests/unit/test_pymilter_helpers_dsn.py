"""Milter.dsn (send_dsn, create_msg) against a real SMTP sink on loopback,
and Milter.dns's session cache."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from testbed.smtpsink import SmtpSink

import Milter
from Milter import dns
from Milter.dsn import create_msg, send_dsn

TEMPLATE = """Subject: SPF %(result)s for %(sender)s

Your mail to %(rcpt)s from %(connectip)s was not accepted.
"""


class FakeSession:
    """A Milter.dns.Session stand-in: the MX list, or a DNS failure."""

    def __init__(self, mx: list[tuple[int, str]] | None) -> None:
        self.mx = mx

    def dns(self, name: str, qtype: str) -> list[Any]:
        if self.mx is None:
            raise dns.DNSError("timeout")
        assert qtype == "MX"
        return list(self.mx)


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink("127.0.0.1", 0) as s:
        yield s


def test_dsn_is_delivered_from_the_null_sender(sink: SmtpSink) -> None:
    v = SimpleNamespace(sender="joe@example.com", receiver="mx.example.org", result="fail",
                        connectip="192.0.2.9")
    msg = create_msg(v, ["a@example.org", "b@example.org"], None, TEMPLATE)
    assert msg is not None
    assert msg["To"] == "joe@example.com"
    assert msg["From"] == "postmaster@mx.example.org"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["X-Mailer"] == "PyMilter-" + Milter.__version__
    res = send_dsn("joe@example.com", "mx.example.org", msg.as_string(),
                   session=FakeSession([(10, "127.0.0.1")]), port=sink.port, timeout=10)
    assert res is None
    [got] = sink.wait_for_messages(1)
    assert got.sender == ""
    assert got.recipients == ("joe@example.com",)
    assert b"Subject: SPF fail for joe@example.com" in got.data
    assert b"a@example.org\r\n\tb@example.org" in got.data


def test_cbv_reports_the_refusal(sink: SmtpSink) -> None:
    sink.refuse("RCPT", "550 5.1.1 no such user", rcpt="bob@example.com")
    session = FakeSession([(10, "127.0.0.1")])
    assert send_dsn("bob@example.com", "mx.example.org", session=session, port=sink.port,
                    timeout=10) == (550, "5.1.1 no such user")
    assert send_dsn("ann@example.com", "mx.example.org", session=session, port=sink.port,
                    timeout=10) is None
    commands = sink.commands()
    assert "MAIL FROM:<>" in commands
    assert not any(c.startswith("DATA") for c in commands)


def test_dns_failure_and_dead_mx_are_temporary() -> None:
    assert send_dsn("a@example.com", "mx.example.org", session=FakeSession(None)) == (
        450, "DNS Timeout: example.com MX")
    # Port 9 on loopback: connection refused, no MX left.
    assert send_dsn("a@example.com", "mx.example.org", session=FakeSession([(1, "127.0.0.1")]),
                    port=9, timeout=5) == (450, "No MX servers available")


def test_create_msg_keeps_header_values_on_one_line() -> None:
    v = SimpleNamespace(sender="x@example.com", receiver="mx.example.org",
                        result="fail\r\nBcc: victim@example.net", connectip="192.0.2.1")
    msg = create_msg(v, ["r@example.org"], None, TEMPLATE)
    assert msg is not None
    assert msg["Bcc"] is None
    assert msg["Subject"] == "SPF fail Bcc: victim@example.net for x@example.com"
    assert create_msg(v, None, None, None) is None


def test_create_msg_from_an_spf_query_and_original_message() -> None:
    q = SimpleNamespace(h="helo.example.com", s="s@example.com", i="192.0.2.7",
                        r="mx.example.org", o="example.com", result="softfail",
                        perm_error=None)
    import email

    orig = email.message_from_string("Subject: hello\nReceived-SPF: softfail\n\nbody\n")
    msg = create_msg(q, ["r@example.org"], orig,
                     "Subject: re: %(subject)s (%(spf_result)s)\n\n%(heloname)s %(sender)s\n")
    assert msg is not None
    assert msg["Subject"] == "re: hello (softfail)"
    assert msg.get_payload() == "helo.example.com s@example.com\n"


def test_dns_session_follows_and_caches_cnames(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {
        ("www.example.com", "A"): [(("www.example.com", "CNAME"), "web.example.com")],
        ("web.example.com", "A"): [(("web.example.com", "A"), "192.0.2.80")],
        ("loop.example.com", "A"): [(("loop.example.com", "CNAME"), "loop.example.com")],
    }
    calls: list[tuple[str, str]] = []

    def lookup(name: str, qtype: str) -> list[tuple[tuple[str, str], Any]]:
        calls.append((name, qtype))
        return answers.get((name, qtype), [])

    monkeypatch.setattr(dns, "DNSLookup", lookup)
    s = dns.Session()
    assert s.dns("WWW.example.com.", "A") == ["192.0.2.80"]
    assert s.dns("www.example.com", "A") == ["192.0.2.80"]
    assert calls == [("www.example.com", "A"), ("web.example.com", "A")]
    assert s.dns("bad..name", "A") == []
    with pytest.raises(dns.DNSError, match="CNAME loop"):
        s.dns("loop.example.com", "A")
