"""CBV and DSN over real sockets: CallbackVerifier + SmtplibTransport against
the scriptable SMTP sink on 127.0.0.1 (a free port); the MX is resolved by
FakeResolver, so no DNS and no packet leaves the host."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from fakes import FakeResolver
from testbed.smtpsink import SmtpSink, smtp_sink_factory  # noqa: F401  (fixture)

from bmslib.policy.address import parse_address
from bmslib.policy.cbv import CallbackVerifier, CbvSettings, CbvStatus
from bmslib.policy.decision import Action
from bmslib.policy.pipeline import CbvRequest
from bmslib.smtpclient import SmtplibTransport

SENDER = parse_address("<alice@example.com>")
VARIABLES = {
    "sender": "alice@example.com", "receiver": "mx.ours.test", "sender_domain": "example.com",
    "heloname": "client.example.com", "connectip": "192.0.2.7", "result": "fail",
    "perm_error": "", "rcpt": "bob@ours.test", "subject": "Invoice",
    "spf_result": "fail (mx.ours.test: domain of example.com does not designate 192.0.2.7 "
                  "as permitted sender)",
}


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink("127.0.0.1", 0) as running:
        yield running


class Clock:
    def now(self) -> float:
        return time.time()


def verifier(sink: SmtpSink, timeout: float = 10.0) -> CallbackVerifier:
    resolver = FakeResolver({"example.com": ["127.0.0.1"]})  # no MX: the domain itself
    return CallbackVerifier(CbvSettings(hostname="mx.ours.test", timeout=timeout), resolver,
                            SmtplibTransport(port=sink.port), Clock())


def test_probe_accepted(sink: SmtpSink) -> None:
    d = verifier(sink).check(SENDER)
    assert d.action is Action.CONTINUE
    [session] = sink.wait_for_sessions(1)
    assert session.helo == "mx.ours.test"
    assert session.commands[1:] == ["MAIL FROM:<>", "RCPT TO:<alice@example.com>", "quit"]
    assert session.messages == []


def test_probe_refused_at_rcpt(sink: SmtpSink) -> None:
    sink.refuse("RCPT", "550 5.1.1 <alice@example.com>: user unknown",
                     rcpt="alice@example.com")
    d = verifier(sink).check(SENDER)
    assert (d.action, d.code, d.xcode) == (Action.REJECT, "550", "5.7.1")
    assert d.lines == ("CBV: 550 5.1.1 <alice@example.com>: user unknown",)


def test_multiline_refusal_is_one_line(sink: SmtpSink) -> None:
    sink.refuse("RCPT", "550 5.1.1 no such user\nsee http://example.com/why")
    d = verifier(sink).check(SENDER)
    assert d.lines == ("CBV: 550 5.1.1 no such user / see http://example.com/why",)


def test_null_sender_refused_at_mail(sink: SmtpSink) -> None:
    sink.refuse("MAIL", "553 5.1.8 we do not take bounces", sender="")
    d = verifier(sink).check(SENDER)
    assert d.action is Action.REJECT and "553 5.1.8" in d.lines[0]


def test_probe_tempfail(sink: SmtpSink) -> None:
    sink.refuse("RCPT", "451 4.3.0 greylisted, try later")
    d = verifier(sink).check(SENDER)
    assert (d.action, d.code, d.xcode) == (Action.TEMPFAIL, "450", "4.2.0")
    assert d.lines == ("CBV: 451 4.3.0 greylisted, try later",)


def test_slow_sink_beyond_the_budget_tempfails(sink: SmtpSink) -> None:
    sink.delay("RCPT", 60.0)
    result = verifier(sink, timeout=1.0).verify(SENDER)
    assert result.status is CbvStatus.TEMPORARY
    assert result.decision().action is Action.TEMPFAIL
    assert "budget" in result.text


def test_slow_banner_beyond_the_budget_tempfails(sink: SmtpSink) -> None:
    sink.delay("BANNER", 60.0)
    assert verifier(sink, timeout=1.0).check(SENDER).action is Action.TEMPFAIL


def test_hangup_is_temporary(sink: SmtpSink) -> None:
    sink.hangup("RCPT")
    assert verifier(sink).check(SENDER).action is Action.TEMPFAIL


def test_nobody_listening_is_temporary() -> None:
    sink = SmtpSink("127.0.0.1", 0).start()
    sink.stop()  # the port is free again: connection refused
    assert verifier(sink).check(SENDER).action is Action.TEMPFAIL


def test_mx_that_is_this_host(sink: SmtpSink) -> None:
    sink.refuse("BANNER", "220 mx.ours.test ESMTP")
    d = verifier(sink).check(SENDER)
    assert d.action is Action.REJECT and d.lines[0].startswith("CBV: 553 ")
    [session] = sink.wait_for_sessions(1)
    assert session.commands == ["quit"]  # nothing asked of ourselves


def test_dsn_delivered_with_the_template_text(sink: SmtpSink) -> None:
    d = verifier(sink)(CbvRequest(SENDER, "fail", "fail"), VARIABLES)
    assert d.action is Action.CONTINUE
    [msg] = sink.wait_for_messages(1)
    assert msg.sender == ""
    assert msg.recipients == ("alice@example.com",)
    parsed = msg.parsed()
    assert parsed["Subject"] == "Sender policy (SPF) failure for mail from alice@example.com"
    assert parsed["From"] == "postmaster@mx.ours.test"
    assert parsed["To"] == "alice@example.com"
    assert parsed["Auto-Submitted"] == "auto-generated"
    body = parsed.get_content()
    assert "publishes a sender policy" in body
    assert "Invoice" in body and "192.0.2.7" in body


def test_dsn_refused_rejects(sink: SmtpSink) -> None:
    sink.refuse("MESSAGE", "554 5.7.1 content rejected")
    d = verifier(sink)(CbvRequest(SENDER, "softfail", "softfail"), VARIABLES)
    assert d.action is Action.REJECT and d.lines == ("CBV: 554 5.7.1 content rejected",)
    assert sink.messages() == []


def test_second_check_is_answered_from_the_cache(sink: SmtpSink) -> None:
    v = verifier(sink)
    assert v.check(SENDER).action is Action.CONTINUE
    sink.wait_for_sessions(1)
    result = v.verify(SENDER)
    assert result.cached and result.status is CbvStatus.ACCEPTED
    assert sink.connections == 1


def test_refusal_is_cached_too(sink: SmtpSink) -> None:
    sink.refuse("RCPT", "550 5.1.1 no")
    v = verifier(sink)
    v.check(SENDER)
    sink.wait_for_sessions(1)
    assert v.check(SENDER).action is Action.REJECT
    assert sink.connections == 1


# --- the sink itself ---------------------------------------------------------------------

def test_sink_rules_filter_by_address_and_count(sink: SmtpSink) -> None:
    transport = SmtplibTransport(port=sink.port)
    sink.refuse("RCPT", "550 5.1.1 no", rcpt="@bad.example")
    sink.refuse("RCPT", "451 4.4.1 once", rcpt="x@good.example", times=1)

    def probe(rcpt: str) -> int:
        return transport.probe("127.0.0.1", helo="h.test", recipient=rcpt, timeout=5).code

    assert probe("Anyone@BAD.example") == 550
    assert probe("x@good.example") == 451
    assert probe("x@good.example") == 250
    assert probe("y@good.example") == 250
    assert [s.replies[-2] for s in sink.wait_for_sessions(4)] == [
        "550 5.1.1 no", "451 4.4.1 once", "250 2.1.5 Ok", "250 2.1.5 Ok"]


def test_sink_undoes_dot_stuffing(sink: SmtpSink) -> None:
    transport = SmtplibTransport(port=sink.port)
    out = transport.deliver("127.0.0.1", helo="h.test", recipient="a@b.example",
                            message=b"Subject: s\r\n\r\n.leading dot\r\n.\r\nend\r\n",
                            timeout=5)
    assert out.ok and out.step == "message"
    [msg] = sink.wait_for_messages(1)
    assert msg.data == b"Subject: s\r\n\r\n.leading dot\r\n.\r\nend\r\n"


def test_sink_factory_fixture(smtp_sink_factory: Callable[..., SmtpSink]) -> None:  # noqa: F811
    first = smtp_sink_factory("127.0.0.1", 0)
    second = smtp_sink_factory("127.0.0.1", 0, name="other.test")
    assert first.port != second.port
    second.refuse("RCPT", "550 5.1.1 no")
    assert verifier(first).check(SENDER).action is Action.CONTINUE
    assert verifier(second).check(SENDER).action is Action.REJECT
    assert first.wait_for_sessions(1)[0].replies[0] == "220 sink.test ESMTP sink"
    assert second.wait_for_sessions(1)[0].replies[0] == "220 other.test ESMTP sink"
