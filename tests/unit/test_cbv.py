"""CallbackVerifier with a scripted SMTP transport, a fake resolver and a fake clock."""

from __future__ import annotations

import email
import email.policy
import logging
from dataclasses import dataclass, field

import pytest
from fakes import FakeClock, FakeResolver

from bmslib.interfaces import DnsTempError
from bmslib.policy.address import parse_address
from bmslib.policy.cbv import (
    CallbackVerifier,
    CbvResult,
    CbvSettings,
    CbvStatus,
    MemoryCbvCache,
)
from bmslib.policy.decision import Action
from bmslib.policy.dsn import load_templates
from bmslib.policy.pipeline import CbvRequest
from bmslib.smtpclient import SmtpOutcome

SENDER = parse_address("<Alice@Example.COM>")
OK = SmtpOutcome(250, "2.1.5 ok", "RCPT")


class MxResolver(FakeResolver):
    """FakeResolver with MX records (``mxs``) and failing MX lookups (``mx_broken``)."""

    def __init__(self, hosts: dict[str, list[str]],
                 mxs: dict[str, list[tuple[int, str]]] | None = None,
                 mx_broken: frozenset[str] = frozenset(),
                 broken: frozenset[str] = frozenset()) -> None:
        super().__init__(hosts, broken)
        self.mxs = mxs or {}
        self.mx_broken = mx_broken
        self.mx_asked: list[str] = []

    def mx(self, domain: str) -> list[tuple[int, str]]:
        self.mx_asked.append(domain)
        if domain in self.mx_broken:
            raise DnsTempError(domain)
        return self.mxs.get(domain, [])


@dataclass
class Call:
    ip: str
    helo: str
    recipient: str
    timeout: float
    message: bytes | None = None


@dataclass
class FakeTransport:
    """Answers per IP from ``script`` (default: accept); records every call."""

    script: dict[str, SmtpOutcome | Exception] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    clock: FakeClock | None = None
    takes: float = 0.0  # seconds each session advances the clock

    def _answer(self, call: Call, final_step: str) -> SmtpOutcome:
        self.calls.append(call)
        if self.clock is not None:
            self.clock.t += self.takes
        answer = self.script.get(call.ip, SmtpOutcome(250, "2.0.0 ok", final_step))
        if isinstance(answer, Exception):
            raise answer
        return answer

    def probe(self, ip: str, *, helo: str, recipient: str, timeout: float) -> SmtpOutcome:
        return self._answer(Call(ip, helo, recipient, timeout), "RCPT")

    def deliver(self, ip: str, *, helo: str, recipient: str, message: bytes,
                timeout: float) -> SmtpOutcome:
        return self._answer(Call(ip, helo, recipient, timeout, message), "message")


def make(transport: FakeTransport | None = None, resolver: FakeResolver | None = None,
         clock: FakeClock | None = None, **settings: object
         ) -> tuple[CallbackVerifier, FakeTransport, FakeClock]:
    clock = clock or FakeClock()
    transport = transport or FakeTransport()
    resolver = resolver or FakeResolver({"example.com": ["127.0.0.1"]})
    kw: dict[str, object] = {"hostname": "mx.ours.test", **settings}
    verifier = CallbackVerifier(CbvSettings(**kw), resolver, transport, clock)  # type: ignore[arg-type]
    return verifier, transport, clock


# --- outcomes -------------------------------------------------------------------------

def test_accepted_probe_continues() -> None:
    v, t, _ = make()
    d = v.check(SENDER)
    assert d.action is Action.CONTINUE
    [call] = t.calls
    assert call == Call("127.0.0.1", "mx.ours.test", "Alice@example.com", 20.0)


def test_refused_at_rcpt_rejects_with_the_servers_text() -> None:
    v, _, _ = make(FakeTransport({"127.0.0.1": SmtpOutcome(550, "5.1.1 no such user", "RCPT")}))
    d = v.check(SENDER)
    assert (d.action, d.code, d.xcode) == (Action.REJECT, "550", "5.7.1")
    assert d.lines == ("CBV: 550 5.1.1 no such user",)
    assert d.tag == "CBV"
    assert d.log.startswith("CBV: 550 5.1.1 no such user")


@pytest.mark.parametrize("step", ["MAIL", "DATA", "message"])
def test_refused_at_other_verdict_steps(step: str) -> None:
    v, _, _ = make(FakeTransport({"127.0.0.1": SmtpOutcome(554, "no", step)}))
    assert v.check(SENDER).action is Action.REJECT


def test_4xx_tempfails_450_420() -> None:
    v, _, _ = make(FakeTransport({"127.0.0.1": SmtpOutcome(451, "4.3.0 try later", "RCPT")}))
    d = v.check(SENDER)
    assert (d.action, d.code, d.xcode) == (Action.TEMPFAIL, "450", "4.2.0")
    assert d.lines == ("CBV: 451 4.3.0 try later",)


def test_deadline_tempfails_without_trying_the_next_mx() -> None:
    resolver = MxResolver({"a.mx": ["192.0.2.1"], "b.mx": ["192.0.2.2"]},
                          {"example.com": [(10, "a.mx"), (20, "b.mx")]})
    t = FakeTransport({"192.0.2.1": SmtpOutcome(0, "no answer", "RCPT", timed_out=True)})
    v, _, _ = make(t, resolver)
    d = v.check(SENDER)
    assert d.action is Action.TEMPFAIL and d.code == "450"
    assert [c.ip for c in t.calls] == ["192.0.2.1"]


def test_mx_order_and_fallback_when_a_server_cannot_be_asked() -> None:
    resolver = MxResolver({"a.mx": ["192.0.2.1"], "b.mx": ["192.0.2.2", "192.0.2.3"]},
                          {"example.com": [(20, "b.mx."), (10, "A.MX.")]})
    t = FakeTransport({"192.0.2.1": SmtpOutcome(0, "connection refused", "connect"),
                       "192.0.2.2": SmtpOutcome(421, "busy", "banner"),
                       "192.0.2.3": SmtpOutcome(550, "5.1.1 unknown", "RCPT")})
    v, _, _ = make(t, resolver)
    d = v.check(SENDER)
    assert d.action is Action.REJECT
    assert [c.ip for c in t.calls] == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    assert "b.mx [192.0.2.3]" in d.log


def test_no_server_answered_is_temporary_and_names_the_last() -> None:
    t = FakeTransport({"127.0.0.1": SmtpOutcome(0, "connection refused", "connect")})
    v, _, _ = make(t)
    d = v.check(SENDER)
    assert d.action is Action.TEMPFAIL
    assert "connection refused" in d.lines[0]


def test_greeting_refused_with_5xx_is_not_a_verdict() -> None:
    t = FakeTransport({"127.0.0.1": SmtpOutcome(554, "go away", "banner")})
    v, _, _ = make(t)
    assert v.check(SENDER).action is Action.TEMPFAIL


def test_null_mx_rejects_without_a_connection() -> None:
    resolver = MxResolver({}, {"example.com": [(0, ".")]})
    v, t, _ = make(resolver=resolver)
    d = v.check(SENDER)
    assert d.action is Action.REJECT and "null MX" in d.lines[0]
    assert t.calls == []


def test_dns_temp_error_tempfails() -> None:
    v, t, _ = make(resolver=MxResolver({}, mx_broken=frozenset({"example.com"})))
    assert v.check(SENDER).action is Action.TEMPFAIL
    v, t, _ = make(resolver=MxResolver({}, {"example.com": [(10, "a.mx")]},
                                       broken=frozenset({"a.mx"})))
    assert v.check(SENDER).action is Action.TEMPFAIL
    assert t.calls == []


def test_no_address_for_the_mx_tempfails() -> None:
    v, t, _ = make(resolver=MxResolver({"a.mx": ["224.0.0.1", "0.0.0.0", "bogus"]},
                                       {"example.com": [(10, "a.mx")]}))
    d = v.check(SENDER)
    assert d.action is Action.TEMPFAIL and "no usable address" in d.lines[0]
    assert t.calls == []


def test_every_mx_is_this_host() -> None:
    t = FakeTransport({"127.0.0.1": SmtpOutcome(220, "mx.ours.test ESMTP", "banner",
                                                self_banner=True)})
    v, _, _ = make(t)
    d = v.check(SENDER)
    assert d.action is Action.REJECT and d.lines[0].startswith("CBV: 553 ")


def test_this_host_as_backup_mx_is_skipped() -> None:
    resolver = MxResolver({"a.mx": ["192.0.2.1"], "b.mx": ["192.0.2.2"]},
                          {"example.com": [(10, "a.mx"), (20, "b.mx")]})
    t = FakeTransport({"192.0.2.1": SmtpOutcome(220, "mx.ours.test", "banner",
                                                self_banner=True)})
    v, _, _ = make(t, resolver)
    assert v.check(SENDER).action is Action.CONTINUE
    assert len(t.calls) == 2


def test_connection_limit() -> None:
    ips = [f"192.0.2.{i}" for i in range(1, 10)]
    resolver = MxResolver({"a.mx": ips}, {"example.com": [(10, "a.mx")]})
    t = FakeTransport({ip: SmtpOutcome(0, "connection refused", "connect") for ip in ips})
    v, _, _ = make(t, resolver, max_connections=3)
    assert v.check(SENDER).action is Action.TEMPFAIL
    assert len(t.calls) == 3


def test_budget_is_shared_by_every_session() -> None:
    clock = FakeClock()
    ips = ["192.0.2.1", "192.0.2.2", "192.0.2.3"]
    resolver = MxResolver({"a.mx": ips}, {"example.com": [(10, "a.mx")]})
    t = FakeTransport({ip: SmtpOutcome(0, "connection refused", "connect") for ip in ips},
                      clock=clock, takes=6.0)
    v, _, _ = make(t, resolver, clock, timeout=10.0)
    assert v.check(SENDER).action is Action.TEMPFAIL
    assert [c.timeout for c in t.calls] == [10.0, 4.0]


@pytest.mark.parametrize("raw", ["<>", "<postmaster>", "<user@[192.0.2.1]>",
                                 "<j\u00f6rg@example.com>", "<a\r\nb@example.com>"])
def test_not_probed(raw: str) -> None:
    v, t, _ = make()
    assert v.check(parse_address(raw)).action is Action.CONTINUE
    assert v.verify(parse_address(raw)).status is CbvStatus.SKIPPED
    assert t.calls == []


def test_transport_bug_is_a_tempfail_and_not_cached(caplog: pytest.LogCaptureFixture) -> None:
    v, t, _ = make(FakeTransport({"127.0.0.1": RuntimeError("boom")}))
    with caplog.at_level(logging.ERROR):
        assert v.check(SENDER).action is Action.TEMPFAIL
    assert "boom" in caplog.text
    del t.script["127.0.0.1"]
    assert v.check(SENDER).action is Action.CONTINUE


# --- cache ----------------------------------------------------------------------------

def test_cache_success_for_days() -> None:
    v, t, clock = make()
    v.check(SENDER)
    result = v.verify(parse_address("<alice@example.com>"))  # case of the local part ignored
    assert result.cached and result.status is CbvStatus.ACCEPTED
    assert len(t.calls) == 1
    clock.t += 6 * 86400
    v.check(SENDER)
    assert len(t.calls) == 1
    clock.t += 2 * 86400
    v.check(SENDER)
    assert len(t.calls) == 2


def test_cache_failure_for_hours() -> None:
    v, t, clock = make(FakeTransport({"127.0.0.1": SmtpOutcome(550, "unknown", "RCPT")}))
    assert v.check(SENDER).action is Action.REJECT
    d = v.check(SENDER)
    assert d.action is Action.REJECT and d.lines == ("CBV: 550 unknown",)
    assert "cached" in d.log
    assert len(t.calls) == 1
    clock.t += 7 * 3600
    v.check(SENDER)
    assert len(t.calls) == 2


def test_cache_tempfail_briefly() -> None:
    v, t, clock = make(FakeTransport({"127.0.0.1": SmtpOutcome(451, "later", "RCPT")}))
    v.check(SENDER)
    v.check(SENDER)
    assert len(t.calls) == 1
    clock.t += 301
    v.check(SENDER)
    assert len(t.calls) == 2
    v2, t2, _ = make(FakeTransport({"127.0.0.1": SmtpOutcome(451, "later", "RCPT")}),
                     tempfail_ttl=0)
    v2.check(SENDER)
    v2.check(SENDER)
    assert len(t2.calls) == 2


def test_memory_cache_expiry_and_size() -> None:
    clock = FakeClock()
    cache = MemoryCbvCache(clock, max_entries=2)
    r = CbvResult(CbvStatus.ACCEPTED, 250, "ok")
    cache.put("a@x", r, 10)
    cache.put("b@x", r, 0)  # not stored
    assert cache.get("b@x") is None
    assert cache.get("a@x") == r
    cache.put("c@x", r, 10)
    cache.get("a@x")  # a is now the most recently used
    cache.put("d@x", r, 10)
    assert cache.get("c@x") is None and len(cache) == 2
    clock.t += 10
    assert cache.get("a@x") is None


def test_result_round_trips_for_a_persistent_cache() -> None:
    r = CbvResult(CbvStatus.REFUSED, 550, "5.1.1 no", "mx [192.0.2.1]", "RCPT", "fail",
                  cached=True, reason="")
    back = CbvResult.from_dict(r.to_dict())
    assert back == CbvResult(CbvStatus.REFUSED, 550, "5.1.1 no", "mx [192.0.2.1]", "RCPT",
                             "fail")
    with pytest.raises(ValueError):
        CbvResult.from_dict({"status": "BOGUS"})
    with pytest.raises(ValueError):
        CbvResult.from_dict({})


# --- DSN -------------------------------------------------------------------------------

VARIABLES = {
    "sender": "Alice@example.com", "receiver": "mx.ours.test", "sender_domain": "example.com",
    "heloname": "client.example.com", "connectip": "192.0.2.7", "result": "",
    "perm_error": "", "rcpt": "bob@ours.test", "subject": "Hello\r\nBcc: x@y",
    "spf_result": "softfail (test)",
}


def test_dsn_through_the_pipeline_step(caplog: pytest.LogCaptureFixture) -> None:
    v, t, _ = make()
    request = CbvRequest(SENDER, "softfail", "softfail")
    with caplog.at_level(logging.INFO):
        d = v(request, VARIABLES)
    assert d.action is Action.CONTINUE
    [call] = t.calls
    assert call.recipient == "Alice@example.com" and call.message is not None
    msg = email.message_from_bytes(call.message, policy=email.policy.default)
    assert msg["To"] == "Alice@example.com"
    assert msg["From"] == "postmaster@mx.ours.test"
    assert msg.get_all("Bcc") is None
    body = msg.get_content()  # type: ignore[attr-defined]
    assert "soft fail" in body and "softfail (test)" in body
    assert "SPF result:    softfail" in body  # request.result fills an empty "result"
    assert "Using: " in caplog.text and "softfail.txt" in caplog.text
    assert "DSN: Alice@example.com softfail.txt sent: 250" in caplog.text


def test_dsn_refused_rejects() -> None:
    v, _, _ = make(FakeTransport({"127.0.0.1": SmtpOutcome(550, "5.7.1 go away", "message")}))
    d = v(CbvRequest(SENDER, "fail", "fail"), VARIABLES)
    assert d.action is Action.REJECT and d.lines == ("CBV: 550 5.7.1 go away",)
    assert "DSN fail" in d.log


def test_template_without_file_is_a_plain_probe(caplog: pytest.LogCaptureFixture) -> None:
    v, t, _ = make()
    with caplog.at_level(logging.INFO):
        assert v(CbvRequest(SENDER, "pass", "pass"), VARIABLES).action is Action.CONTINUE
    assert t.calls[0].message is None
    assert "PLAIN" in caplog.text


def test_plain_cbv_request() -> None:
    v, t, _ = make()
    v(CbvRequest(SENDER, None, "none"), VARIABLES)
    assert t.calls[0].message is None


def test_helo_dsn_goes_to_the_target() -> None:
    v, t, _ = make(resolver=FakeResolver({"client.example.com": ["127.0.0.1"]}))
    target = parse_address("<postmaster@client.example.com>")
    v(CbvRequest(target, "heloerror", "fail"), VARIABLES)
    [call] = t.calls
    assert call.recipient == "postmaster@client.example.com"
    assert call.message is not None and b"client.example.com" in call.message


def test_cached_result_means_no_second_notice() -> None:
    v, t, _ = make()
    v(CbvRequest(SENDER, "fail", "fail"), VARIABLES)
    v(CbvRequest(SENDER, "fail", "fail"), VARIABLES)
    assert len(t.calls) == 1


def test_templates_are_loaded_at_construction() -> None:
    v, _, _ = make()
    assert set(v.templates) == set(load_templates(None))


def test_permerror_notice_explains_the_error() -> None:
    v, t, _ = make()
    variables = {**VARIABLES, "spf_result": "permerror (mx.ours.test: Too many DNS lookups)"}
    v(CbvRequest(SENDER, "permerror", "permerror"), variables)
    assert t.calls[0].message is not None
    msg = email.message_from_bytes(t.calls[0].message, policy=email.policy.default)
    body = msg.get_content()  # type: ignore[attr-defined]
    assert "    permerror (mx.ours.test: Too many DNS lookups)" in body
