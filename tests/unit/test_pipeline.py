"""The policy pipeline of one SMTP connection, driven directly with fakes."""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from typing import Any

import pytest
from fakes import FakeAccess, FakeClock, FakeStore

from bmslib.interfaces import SenderStanding
from bmslib.policy.address import Address, parse_address
from bmslib.policy.checks import CheckSettings
from bmslib.policy.connection import Connection, ConnectionSettings, IpList
from bmslib.policy.decision import CONTINUE, AccessKind, AccessValue, Action, Decision
from bmslib.policy.edits import HeaderEdit
from bmslib.policy.pipeline import (
    CbvRequest,
    PolicySettings,
    Services,
    SmtpSession,
    SpfResult,
)
from bmslib.policy.reputation import ReputationSettings

INTERNAL = ConnectionSettings(IpList(["192.168.0.0/16"]), IpList(["203.0.113.25"]))
CHECKS = CheckSettings(internal_domains=("example.com",),
                       hello_blacklist=frozenset({"mx.example.com"}))


class FakeSpf:
    def __init__(self, result: SpfResult) -> None:
        self.result = result
        self.calls: list[tuple[str, str, str]] = []

    def __call__(self, conn: Connection, helo: str, sender: Address) -> SpfResult:
        self.calls.append((conn.ip or "", helo, sender.mailbox))
        return self.result


class FakeCbv:
    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.calls: list[tuple[CbvRequest, dict[str, str]]] = []

    def __call__(self, request: CbvRequest, variables: Mapping[str, str]) -> Decision:
        self.calls.append((request, dict(variables)))
        return self.decision


def macros(**values: str) -> Any:
    table = {"j": "mx.example.com", **values}
    return lambda name: table.get(name)


def session(*, spf: FakeSpf | None = None, cbv: FakeCbv | None = None,
            store: FakeStore | None = None, access: FakeAccess | None = None,
            **settings: Any) -> SmtpSession:
    s = PolicySettings(connection=INTERNAL, checks=CHECKS, **settings)
    return SmtpSession(s, Services(access or FakeAccess({}), store or FakeStore(),
                                   FakeClock(), spf=spf, cbv=cbv))


def connect(s: SmtpSession, ip: str, hostname: str = "client.example.net",
            **m: str) -> Decision:
    return s.connect(hostname, socket.AF_INET6 if ":" in ip else socket.AF_INET, (ip, 4000),
                     macros(**m))


def test_zombie_pc_rejected_at_mail_with_the_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    s = session()
    assert not connect(s, "192.168.100.171").final
    assert not s.helo("pc17.example.com").final
    d = s.mail("<debby@fedex.com>", [], macros())
    assert d.action is Action.REJECT and (d.code, d.xcode) == ("550", "5.7.1")
    assert "REJECT: zombie PC at 192.168.100.171 sending MAIL FROM debby@fedex.com" \
        in caplog.messages
    assert "connect from client.example.net at (192.168.100.171, 4000) INTERNAL" \
        in caplog.messages


def test_banned_ip_rejects_at_data_and_a_second_mail_from_cannot_clear_it(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    store = FakeStore()
    store.ban_ip("198.51.100.9", 1e12, "demerits")
    s = session(store=store)
    assert not connect(s, "198.51.100.9").final  # delayed
    s.helo("client.example.net")
    assert not s.mail("<a@b.example>", [], macros()).final
    assert not s.rcpt("<bob@example.com>", []).final
    assert not s.rcpt("<carol@example.com>", []).final  # every recipient still logged
    assert s.data().action is Action.REJECT
    s.abort()
    assert not s.mail("<other@c.example>", [], macros()).final  # RSET and retry
    assert s.data().action is Action.REJECT
    assert caplog.messages.count("REJECT: BANNED IP 198.51.100.9") == 2
    assert "rcpt to <carol@example.com>" in caplog.messages


def test_the_ip_ban_goes_before_a_ptr_reject_and_the_store_is_read_once_per_message(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    reads: list[str] = []

    class CountingStore(FakeStore):
        inside = False

        def standing(self, domain: str | None, address: str | None, ip: str | None,
                     now: float) -> SenderStanding:
            reads.append(f"standing ip={ip}")
            self.inside = True
            try:
                return super().standing(domain, address, ip, now)
            finally:
                self.inside = False

        def ip_banned(self, ip: str, now: float) -> bool:
            if not self.inside:
                reads.append("ip_banned")
            return super().ip_banned(ip, now)

    store = CountingStore()
    store.ban_ip("198.51.100.9", 1e12, "demerits")
    s = session(store=store)
    assert not connect(s, "198.51.100.9", hostname="localhost").final  # a PTR reject, delayed
    assert reads == []  # connect asks the store nothing
    s.helo("client.example.net")
    assert not s.mail("<a@b.example>", [], macros()).final
    assert reads == ["standing ip=198.51.100.9"]
    s.rcpt("<bob@example.com>", [])
    assert s.data().tag == "BANNED IP"  # the ban, as when it was read at connect
    assert "BAN IN FORCE: ip 198.51.100.9 (demerits)" in caplog.messages
    s.abort()
    assert not s.mail("<c@d.example>", [], macros()).final
    assert reads[1:] == ["standing ip=None"]  # the connection's ban is known by now
    assert s.data().tag == "BANNED IP"


def test_smtp_auth_cancels_the_connection_reject() -> None:
    store = FakeStore()
    store.ban_ip("198.51.100.9", 1e12, "demerits")
    access = FakeAccess({("SMTP-Auth", "alice@example.com"): AccessValue(AccessKind.OK)})
    s = session(store=store, access=access)
    connect(s, "198.51.100.9")
    s.helo("laptop")
    assert not s.mail("<alice@example.com>", [], macros(**{"{auth_authen}": "alice"})).final
    assert not s.data().final


def test_smtp_auth_user_without_policy_is_held_to_the_zombie_rule() -> None:
    s = session()
    connect(s, "198.51.100.9")
    s.helo("laptop")
    d = s.mail("<x@fedex.com>", [], macros(**{"{auth_authen}": "alice"}))
    assert d.tag == "zombie PC"


def test_spf_reject_is_delayed_to_data_and_spf_skipped_for_trusted() -> None:
    spf = FakeSpf(SpfResult(Decision.reject("SPF fail", "SPF fail", delay=True,
                                            log="SPF fail 550 x"), result="fail"))
    s = session(spf=spf)
    connect(s, "198.51.100.9")
    s.helo("client.example.net")
    assert not s.mail("<a@b.example>", [], macros()).final
    s.rcpt("<bob@example.com>", [])
    assert s.data().tag == "SPF fail"
    t = session(spf=spf)
    connect(t, "203.0.113.25")  # trusted relay
    t.helo("relay")
    t.mail("<a@b.example>", [], macros())
    assert len(spf.calls) == 1


def test_message_reject_does_not_leak_into_the_next_message() -> None:
    spf = FakeSpf(SpfResult(Decision.reject("SPF fail", delay=True)))
    s = session(spf=spf)
    connect(s, "198.51.100.9")
    s.helo("client.example.net")
    s.mail("<a@b.example>", [], macros())
    s.abort()
    spf.result = SpfResult(CONTINUE)
    s.mail("<ok@c.example>", [], macros())
    assert not s.data().final


def test_eom_adds_our_headers_and_removes_forged_ones() -> None:
    spf = FakeSpf(SpfResult(CONTINUE, received_spf="pass (mx.example.com: ...) receiver=x",
                            authres=("spf=pass smtp.mailfrom=a@b.example",)))
    s = session(spf=spf)
    connect(s, "198.51.100.9")
    s.helo("client.example.net")
    s.mail("<a@b.example>", [], macros())
    s.rcpt("<bob@example.com>", [])
    s.header("Authentication-Results", "mx.example.com; spf=pass smtp.mailfrom=forged")
    s.header("Authentication-Results", "other.example; dkim=pass")
    s.header("Received-SPF", "pass (forged) receiver=mx.example.com; client-ip=1.2.3.4")
    s.header("Authentication-Results", "MX.Example.COM; spf=pass")
    result = s.eom(macros(i="QID"))
    assert not result.decision.final
    assert result.edits == (
        HeaderEdit("delete", "Authentication-Results", index=3),
        HeaderEdit("delete", "Authentication-Results", index=1),
        HeaderEdit("delete", "Received-SPF", index=1),
        HeaderEdit("insert", "Received-SPF", "pass (mx.example.com: ...) receiver=x"),
        HeaderEdit("insert", "Authentication-Results",
                   "mx.example.com;\n\tiprev=pass policy.iprev=198.51.100.9;\n\t"
                   "spf=pass smtp.mailfrom=a@b.example"),
    )


@pytest.mark.parametrize(("cbv_decision", "action"), [
    (CONTINUE, Action.CONTINUE),
    (Decision.reject("CBV", "550 user unknown"), Action.REJECT),
    (Decision.tempfail("CBV", "450 try later", code="450", xcode="4.2.0"), Action.TEMPFAIL),
])
def test_cbv_at_end_of_message(cbv_decision: Decision, action: Action) -> None:
    request = CbvRequest(parse_address("<a@b.example>"), "softfail", "softfail")
    spf = FakeSpf(SpfResult(CONTINUE, cbv=request, result="softfail",
                            received_spf="softfail x"))
    cbv = FakeCbv(cbv_decision)
    s = session(spf=spf, cbv=cbv)
    connect(s, "198.51.100.9")
    s.helo("client.example.net")
    s.mail("<a@b.example>", [], macros())
    s.rcpt("<bob@example.com>", [])
    s.header("Subject", "hello there")
    assert s.eom(macros()).decision.action is action
    (req, variables), = cbv.calls
    assert req is request
    assert variables["subject"] == "hello there" and variables["rcpt"] == "bob@example.com"
    assert variables["connectip"] == "198.51.100.9" and variables["result"] == "softfail"


def test_whitelisted_sender_skips_the_cbv() -> None:
    request = CbvRequest(parse_address("<a@b.example>"), None, "neutral")
    cbv = FakeCbv(Decision.reject("CBV"))
    s = session(spf=FakeSpf(SpfResult(CONTINUE, cbv=request, whitelist=True)), cbv=cbv)
    connect(s, "198.51.100.9")
    s.helo("x")
    s.mail("<a@b.example>", [], macros())
    assert not s.eom(macros()).decision.final and cbv.calls == []


def test_dry_run_logs_and_never_rejects(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    s = session(dry_run=True)
    connect(s, "192.168.100.171")
    s.helo("pc")
    assert not s.mail("<debby@fedex.com>", [], macros()).final
    assert "DRYRUN REJECT: zombie PC at 192.168.100.171 sending MAIL FROM debby@fedex.com" \
        in caplog.messages


def test_demerits_ban_after_repeated_offences() -> None:
    store = FakeStore()
    s = session(store=store, reputation=ReputationSettings(max_demerits=3))
    connect(s, "198.51.100.9")
    assert s.helo("mx.example.com").tag == "spam from self"  # +4 > 3
    assert store.ip_banned("198.51.100.9", 2000)
    t = session(store=store)
    connect(t, "198.51.100.9")
    t.helo("x")
    t.mail("<a@b.example>", [], macros())
    assert t.data().tag == "BANNED IP"


def test_missing_helo_and_hostile_envelope() -> None:
    s = session()
    connect(s, "2001:db8::7")
    assert s.mail("<a@b.example>", [], macros()).tag == "missing HELO"
    s.helo("caf\udce9.example")  # 8-bit HELO
    for raw in ("<>", "<postmaster>", '<"a b"@x.example>', "<a@[IPv6:2001:db8::1]>",
                "garbage <<>>"):
        assert not s.mail(raw, [], macros()).final


def test_outsider_using_our_domain_without_spf_is_spam_from_self(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    store = FakeStore()
    s = session(spf=FakeSpf(SpfResult(CONTINUE, result="none")), store=store,
                reputation=ReputationSettings(max_demerits=3))
    connect(s, "198.51.100.9")
    s.helo("client.example.net")
    assert not s.mail("<ceo@example.com>", [], macros()).final  # delayed to DATA
    assert not s.rcpt("<bob@example.com>", []).final
    d = s.data()
    assert (d.action, d.code, d.xcode, d.tag) == (Action.REJECT, "550", "5.7.1",
                                                   "spam from self")
    assert "REJECT: spam from self example.com" in caplog.messages
    assert store.ip_banned("198.51.100.9", 0)  # 4 demerits > 3
    # A domain of ours that publishes SPF is left to the SPF policy; a
    # foreign domain without SPF is not "self".
    for sender, result in (("<ceo@example.com>", "pass"), ("<a@other.example>", "none")):
        t = session(spf=FakeSpf(SpfResult(CONTINUE, result=result)))
        connect(t, "198.51.100.10")
        t.helo("client.example.net")
        assert not t.mail(sender, [], macros()).final
        assert not t.data().final


@pytest.mark.parametrize(("headers", "added"), [
    ([("From", "Bank <service@bank.example>")], True),  # From: is another domain
    ([("From", "Alice <alice@b.example>")], False),  # the MAIL FROM domain
    ([("From", "alice@example.org"), ("Sender", "list@lists.example.org")], False),
    ([("From", "<alice@b.example.evil>")], True),  # not a parent of a.b.example
    ([], True),  # no From: at all
])
def test_supply_sender_adds_the_mail_from_as_sender(
        headers: list[tuple[str, str]], added: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    spf = FakeSpf(SpfResult(CONTINUE, result="pass"))
    sender = "<bounce@a.b.example>" if headers[:1] != [("From", "alice@example.org")] \
        else "<bounce@lists.example.org>"
    s = session(spf=spf, supply_sender=True)
    connect(s, "198.51.100.9")
    s.helo("mail.b.example")
    s.mail(sender, [], macros())
    s.rcpt("<bob@example.com>", [])
    for name, value in headers:
        s.header(name, value)
    edits = s.eom(macros()).edits
    supplied = [e for e in edits if e.name == "Sender"]
    if added:
        assert supplied == [HeaderEdit("insert", "Sender", sender, index=-1)]
        assert "NOTE: Supplying MFROM as Sender" in caplog.messages
    else:
        assert supplied == [] and "NOTE: Supplying MFROM as Sender" not in caplog.messages
    # Off by default, and never for internal clients.
    for on, ip in ((False, "198.51.100.9"), (True, "192.168.1.2")):
        t = session(spf=spf, supply_sender=on)
        connect(t, ip)
        t.helo("mail.b.example")
        t.mail("<bounce@example.com>", [], macros())
        t.header("From", "service@bank.example")
        assert all(e.name != "Sender" for e in t.eom(macros()).edits)


def test_a_session_the_mta_ends_leaves_a_closing_line(caplog: pytest.LogCaptureFixture) -> None:
    """The MTA rejected the recipient itself and the client quit: bms's log
    still ends the session with one line."""
    caplog.set_level(logging.INFO, "bms")
    s = session()
    connect(s, "192.168.1.5", "pc.example.net\n\x1b[2J")
    s.helo("pc.example.net")
    assert not s.mail("<alice@example.com>", [], macros()).final
    s.abort()
    s.close()
    assert caplog.messages[-1] == "close: session from pc.example.net\\n\\x1b[2J at " \
                                  "192.168.1.5 ended"
