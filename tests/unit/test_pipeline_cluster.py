"""Greylisting, SRS, DKIM and the reputation lists in the policy pipeline,
driven directly with fakes (the store is the in-memory FakeStore; the
backends themselves have their contract tests in tests/socket)."""

from __future__ import annotations

import logging
import shutil
from typing import Any

import pytest
from dkimkeys import keypair
from fakes import FakeAccess, FakeClock, FakeStore

from bmslib.policy.decision import CONTINUE, AccessKind, AccessValue, Action, Decision
from bmslib.policy.dkim import DkimSettings, sign, verify_all
from bmslib.policy.dsn import build_message
from bmslib.policy.edits import EomResult, apply_edits
from bmslib.policy.greylist import GreylistSettings
from bmslib.policy.pipeline import PolicySettings, Services, SmtpSession, SpfResult
from bmslib.policy.reputation import ReputationSettings
from bmslib.policy.srs import Srs, SrsSettings
from unit.test_pipeline import CHECKS, INTERNAL, FakeSpf, connect, macros

OUTSIDE = "198.51.100.9"
GREY = GreylistSettings(time_minutes=5, expire_hours=6, retain_days=36)
SRS = SrsSettings(secret="s3cret", fwdomain="example.com",
                  srs_domains=frozenset({"example.com"}), reject_spoofed=True)

BODY = b"Hello Ann,\r\n\r\nthe numbers are attached.\r\n"
HEADERS = [("From", "Joe <joe@example.com>"), ("To", "ann@outside.example"),
           ("Subject", "quarterly report"), ("Date", "Tue, 24 Nov 2026 10:00:00 +0000"),
           ("Message-ID", "<1@example.com>")]


class Resolver:
    def __init__(self, records: dict[str, list[bytes]] | None = None) -> None:
        self.records = records or {}

    def addresses(self, name: str) -> list[str]:
        return []

    def ptr(self, ip: str) -> list[str]:
        return []

    def mx(self, domain: str) -> list[tuple[int, str]]:
        return []

    def txt(self, name: str) -> list[bytes]:
        return self.records.get(name.lower(), [])


def spf(result: str) -> FakeSpf:
    return FakeSpf(SpfResult(CONTINUE, result=result,
                             authres=(f"spf={result} smtp.mailfrom=sender",)))


def build(*, store: FakeStore | None = None, clock: FakeClock | None = None,
          access: FakeAccess | None = None, spf_result: str = "none",
          resolver: Resolver | None = None, srs: SrsSettings | None = None,
          **settings: Any) -> SmtpSession:
    clock = clock or FakeClock(1_000_000.0)
    s = PolicySettings(connection=INTERNAL, checks=CHECKS, **settings)
    return SmtpSession(s, Services(
        access or FakeAccess({}), store or FakeStore(), clock, resolver=resolver,
        spf=spf(spf_result), srs=None if srs is None else Srs(srs, clock.now)))


def envelope(s: SmtpSession, sender: str, *rcpts: str, ip: str = OUTSIDE,
             **m: str) -> list[Decision]:
    connect(s, ip)
    s.helo("client.example.net")
    answers = [s.mail(sender, [], macros(**m))]
    answers += [s.rcpt(r, []) for r in rcpts]
    return answers


def message(s: SmtpSession, headers: list[tuple[str, str]] | None = None,
            body: bytes = BODY) -> EomResult:
    data = s.data()
    if data.final:
        return EomResult(data)
    for name, value in headers if headers is not None else HEADERS:
        s.header(name, value)
    s.eoh()
    s.body(body)
    return s.eom(macros(i="Q1"))


# --- greylisting -----------------------------------------------------------------------

def test_greylist_tempfails_first_attempt_and_passes_a_retry_after_time(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    store, clock = FakeStore(), FakeClock(1_000_000.0)
    first = envelope(build(store=store, clock=clock, greylist=GREY),
                     "<a@sender.example>", "<bob@example.com>")
    d = first[-1]
    assert (d.action, d.code, d.xcode) == (Action.TEMPFAIL, "451", "4.7.1")
    assert d.lines == ("Greylisted: please retry in 5 minutes.",)
    assert ("TEMPFAIL: greylist 198.51.100.0/24 a@sender.example bob@example.com"
            in caplog.messages)
    clock.t += 60  # too early: still greylisted, with the time left
    early = envelope(build(store=store, clock=clock, greylist=GREY),
                     "<a@sender.example>", "<bob@example.com>")[-1]
    assert early.lines == ("Greylisted: please retry in 4 minutes.",)
    clock.t += 300
    s = build(store=store, clock=clock, greylist=GREY)
    assert not envelope(s, "<a@sender.example>", "<bob@example.com>", ip="198.51.100.77")[-1].final
    assert "GREYLIST PASSED: 198.51.100.0/24 a@sender.example bob@example.com" \
        in caplog.messages
    assert message(s).decision is CONTINUE


def test_greylist_key_is_the_spf_pass_domain_not_the_ip() -> None:
    store, clock = FakeStore(), FakeClock(1_000_000.0)
    envelope(build(store=store, clock=clock, greylist=GREY, spf_result="pass"),
             "<a@sender.example>", "<bob@example.com>")
    clock.t += 600
    # Another outbound host of the same domain, another network: same triplet.
    s = build(store=store, clock=clock, greylist=GREY, spf_result="pass")
    assert not envelope(s, "<a@sender.example>", "<bob@example.com>", ip="203.0.113.200")[-1].final
    assert ("sender.example", "a@sender.example", "bob@example.com") in store.grey


@pytest.mark.parametrize("case", ["internal", "auth", "null sender", "auto-whitelisted",
                                  "pending reject", "off"])
def test_greylist_is_skipped(case: str) -> None:
    store = FakeStore()
    ip, sender, m = OUTSIDE, "<a@sender.example>", {}
    if case == "internal":
        ip, sender = "192.168.1.5", "<a@example.com>"
    elif case == "auth":
        m = {"{auth_authen}": "alice"}
        sender = "<alice@example.com>"
    elif case == "null sender":
        sender = "<>"
    elif case == "auto-whitelisted":
        store.list_add("whitelist", "a@sender.example", 1e12)
    elif case == "pending reject":
        store.ban_ip(OUTSIDE, 1e12, "demerits")
    s = build(store=store, greylist=None if case == "off" else GREY)
    assert not envelope(s, sender, "<bob@example.com>", ip=ip, **m)[-1].final
    assert store.grey == {}


def test_store_down_tempfails_greylisting_and_nothing_else(
        caplog: pytest.LogCaptureFixture) -> None:
    """Redis stopped: greylisting tempfails (never accept unchecked); bans
    and lists read as empty, so SPF and content policy go on."""
    caplog.set_level(logging.INFO, "bms")
    store = FakeStore()
    store.down = True
    s = build(store=store, greylist=GREY)
    answers = envelope(s, "<a@sender.example>", "<bob@example.com>")
    assert not answers[0].final  # connect, MAIL FROM: no crash
    assert (answers[-1].action, answers[-1].code, answers[-1].xcode) == (
        Action.TEMPFAIL, "451", "4.7.1")
    assert any(m.startswith("TEMPFAIL: greylist unavailable: redis") for m in caplog.messages)
    # Without greylisting the same store outage lets mail through.
    s = build(store=store)
    envelope(s, "<a@sender.example>", "<bob@example.com>")
    assert message(s).decision is CONTINUE


def test_dry_run_greylist_logs_and_continues(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    s = build(greylist=GREY, dry_run=True)
    assert not envelope(s, "<a@sender.example>", "<bob@example.com>")[-1].final
    assert any(m.startswith("DRYRUN TEMPFAIL: greylist 198.51.100.0/24") for m in caplog.messages)


# --- SRS ---------------------------------------------------------------------------------

def srs_address(original: str, when: float) -> str:
    return Srs(SRS, lambda: when).forward(original)


def test_bounce_to_valid_srs_address_is_reversed_and_not_greylisted(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    clock = FakeClock(1_000_000.0)
    addr = srs_address("joe@outside.example", clock.t)
    assert addr.startswith("SRS0=") and addr.endswith("@example.com")
    s = build(clock=clock, srs=SRS, greylist=GREY)
    assert not any(d.final for d in envelope(s, "<>", f"<{addr}>"))
    result = message(s)
    assert result.decision is CONTINUE
    assert result.del_rcpts == (f"<{addr}>",)
    assert result.add_rcpts == ("<joe@outside.example>",)
    assert result.new_sender is None
    assert f"SRS: {addr} is joe@outside.example" in caplog.messages


def test_forged_srs_signature_is_refused_at_rcpt() -> None:
    clock = FakeClock(1_000_000.0)
    addr = srs_address("joe@outside.example", clock.t)
    local, _, domain = addr.partition("@")
    forged = local[:5] + ("A" if local[5] != "A" else "B") + local[6:] + "@" + domain
    d = envelope(build(clock=clock, srs=SRS), "<>", f"<{forged}>")[-1]
    assert (d.action, d.code, d.xcode, d.tag) == (Action.REJECT, "550", "5.7.1", "srs spoofed")


def test_srs_address_past_maxage_is_refused() -> None:
    clock = FakeClock(1_000_000.0)
    addr = srs_address("joe@outside.example", clock.t - (SRS.maxage + 2) * 86400)
    d = envelope(build(clock=clock, srs=SRS), "<>", f"<{addr}>")[-1]
    assert d.tag == "srs spoofed"


def test_unsigned_bounce_is_refused_at_data_from_outside_only() -> None:
    s = build(srs=SRS)
    assert not any(d.final for d in envelope(s, "<>", "<bob@example.com>"))
    d = s.data()
    assert (d.action, d.tag) == (Action.REJECT, "bounce with no SRS encoding")
    inside = build(srs=SRS)
    assert not any(d.final for d in envelope(inside, "<>", "<bob@example.com>",
                                             ip="192.168.1.5"))
    assert not inside.data().final


def test_relayed_mail_from_outside_sender_gets_srs0_envelope_sender() -> None:
    clock = FakeClock(1_000_000.0)
    s = build(clock=clock, srs=SRS)
    # A trusted relay (say our list server) relays mail of an outside author.
    assert not any(d.final for d in envelope(s, "<ann@outside.example>",
                                             "<carl@elsewhere.example>", ip="203.0.113.25"))
    result = message(s)
    assert result.new_sender is not None and result.new_sender.startswith("<SRS0=")
    assert Srs(SRS, clock.now).reverse(result.new_sender[1:-1]) == "ann@outside.example"
    local = build(clock=clock, srs=SRS)
    envelope(local, "<joe@example.com>", "<carl@elsewhere.example>", ip="192.168.1.5")
    assert message(local).new_sender is None  # our own sender: nothing to rewrite


# --- DKIM --------------------------------------------------------------------------------

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    return keypair(tmp_path_factory.mktemp("dkim"), "k")


def wire(headers: list[tuple[str, str]]) -> bytes:
    return b"".join(f"{n}: {v}".replace("\n", "\r\n").encode() + b"\r\n" for n, v in headers)


def signed_headers(key: bytes, domain: str = "sender.example") -> list[tuple[str, str]]:
    value = sign(wire(HEADERS) + b"\r\n" + BODY, DkimSettings(key, domain, "sel"))
    return [("DKIM-Signature", value), *HEADERS]


@needs_openssl
@pytest.mark.parametrize(("body", "result"), [(BODY, "pass"), (BODY + b"tampered\r\n", "fail")])
def test_external_mail_is_verified_into_authentication_results(
        key: tuple[bytes, bytes], body: bytes, result: str) -> None:
    resolver = Resolver({"sel._domainkey.sender.example": [key[1]]})
    s = build(resolver=resolver)
    envelope(s, "<a@sender.example>", "<bob@example.com>")
    eom = message(s, signed_headers(key[0]), body)
    assert eom.decision is CONTINUE
    ar = [e.value for e in eom.edits if e.name == "Authentication-Results"]
    assert len(ar) == 1
    assert f"dkim={result}" in ar[0] and "header.d=sender.example" in ar[0]


@needs_openssl
@pytest.mark.parametrize(("key_tag", "kind", "body", "expect"), [
    ("DKIM-Fail", AccessKind.REJECT, BODY + b"x\r\n", Action.REJECT),
    ("DKIM-Pass", AccessKind.REJECT, BODY, Action.REJECT),
    ("DKIM-Pass", AccessKind.OK, BODY, Action.CONTINUE),
    ("DKIM-Fail", AccessKind.REJECT, BODY, Action.CONTINUE),  # it passed: no match
])
def test_dkim_access_keys_match_per_domain(key: tuple[bytes, bytes], key_tag: str,
                                           kind: AccessKind, body: bytes,
                                           expect: Action) -> None:
    resolver = Resolver({"sel._domainkey.sender.example": [key[1]]})
    access = FakeAccess({(key_tag, "sender.example"): AccessValue(kind)})
    s = build(resolver=resolver, access=access)
    envelope(s, "<a@sender.example>", "<bob@example.com>")
    eom = message(s, signed_headers(key[0]), body)
    assert eom.decision.action is expect
    if expect is Action.REJECT:
        assert (eom.decision.code, eom.decision.xcode) == ("550", "5.7.1")
        assert "sender.example" in eom.decision.lines[0]


@needs_openssl
def test_internal_mail_is_signed_last_and_verifies(key: tuple[bytes, bytes]) -> None:
    settings = DkimSettings(key[0], "example.com", "sel")
    s = build(dkim=settings, resolver=Resolver())
    envelope(s, "<joe@example.com>", "<ann@outside.example>", ip="192.168.1.5")
    eom = message(s)
    sigs = [e for e in eom.edits if e.name == "DKIM-Signature"]
    assert len(sigs) == 1 and sigs[0].index == 0 and eom.edits[-1] is sigs[0]
    delivered = apply_edits(HEADERS, eom.edits)
    txt = Resolver({"sel._domainkey.example.com": [key[1]]}).txt
    results = verify_all(wire(delivered) + b"\r\n" + BODY, txt)
    assert [(r.result, r.domain) for r in results] == [("pass", "example.com")]
    outside = build(dkim=settings, resolver=Resolver())
    envelope(outside, "<a@other.example>", "<bob@example.com>")
    assert not any(e.name == "DKIM-Signature" for e in message(outside).edits)


# --- reputation lists and domain bans ----------------------------------------------------

def test_recipients_of_internal_senders_are_auto_whitelisted_and_skip_greylisting() -> None:
    store, clock = FakeStore(), FakeClock(1_000_000.0)
    s = build(store=store, clock=clock)
    envelope(s, "<joe@example.com>", "<ann@outside.example>", "<bob@example.com>",
             ip="192.168.1.5")
    assert message(s).decision is CONTINUE
    assert store.listed("whitelist", "ann@outside.example", clock.t + 59 * 86400)
    assert not store.listed("whitelist", "bob@example.com", clock.t)
    reply = build(store=store, clock=clock, greylist=GREY)
    assert not envelope(reply, "<ann@outside.example>", "<joe@example.com>")[-1].final


def test_blacklisted_sender_is_refused_at_data(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    store = FakeStore()
    store.list_add("blacklist", "spammer.example", 1e12)
    s = build(store=store)
    assert not any(d.final for d in envelope(s, "<x@spammer.example>", "<bob@example.com>"))
    d = s.data()
    assert (d.action, d.tag) == (Action.REJECT, "blacklist")
    assert "REJECT: blacklist x@spammer.example" in caplog.messages


@pytest.mark.parametrize(("spf_result", "domain", "banned", "blacklisted"), [
    ("pass", "mail2.spammer.example", "*.spammer.example", None),
    ("pass", "spammer.example", "spammer.example", None),
    ("pass", "gmail.com", None, "x@gmail.com"),
    ("softfail", "spammer.example", None, None),  # not authenticated: no ban
])
def test_ban_policy_bans_only_authenticated_domains(
        spf_result: str, domain: str, banned: str | None, blacklisted: str | None) -> None:
    store = FakeStore()
    ban = SpfResult(Decision.reject("BAN", "go away", delay=True), result=spf_result, ban=True)
    s = PolicySettings(connection=INTERNAL, checks=CHECKS,
                       reputation=ReputationSettings(ban_days=7),
                       email_providers=frozenset({"gmail.com"}))
    session = SmtpSession(s, Services(FakeAccess({}), store, FakeClock(1_000_000.0),
                                      spf=FakeSpf(ban)))
    envelope(session, f"<x@{domain}>", "<bob@example.com>")
    assert [b[0] for b in store.domain_bans] == ([banned] if banned else [])
    assert store.listed("blacklist", blacklisted or "-", 1_000_001.0) == bool(blacklisted)


def test_demerit_ban_with_store_down_does_not_crash() -> None:
    store = FakeStore()
    store.down = True
    s = SmtpSession(PolicySettings(connection=INTERNAL, checks=CHECKS,
                                   reputation=ReputationSettings(max_demerits=1)),
                    Services(FakeAccess({}), store, FakeClock()))
    connect(s, OUTSIDE)
    assert s.helo("192.0.2.1").final  # numeric HELO; demerits, no ban written
    assert s.helo("mx.example.com").final
    assert store.bans == []



# --- replies to our own DSNs -----------------------------------------------------------

def test_dsn_carries_an_srs_signed_message_id() -> None:
    from bmslib.policy.dsn import load_templates
    from bmslib.policy.dsnreply import message_id
    mid = message_id(Srs(SRS, lambda: 1_000_000.0), "forged@victim.example")
    assert mid is not None and mid.startswith("SRS0=") and mid.endswith("@example.com")
    tmpl = load_templates(None)["softfail"]
    raw = build_message(tmpl, {}, to="forged@victim.example", receiver="mx.example.com",
                        now=1_000_000.0, message_id=mid)
    assert f"Message-ID: <{mid}>".encode() in raw


@pytest.mark.parametrize("forged", [False, True])
def test_reply_to_our_dsn_blacklists_the_notified_sender_and_is_discarded(
        forged: bool, caplog: pytest.LogCaptureFixture) -> None:
    from bmslib.policy.dsnreply import message_id
    caplog.set_level(logging.INFO, "bms")
    clock, store = FakeClock(1_000_000.0), FakeStore()
    mid = message_id(Srs(SRS, clock.now), "forged@victim.example")
    assert mid is not None
    if forged:
        mid = mid[:5] + ("A" if mid[5] != "A" else "B") + mid[6:]
    report = (b"This is the mail system at host mx.victim.example.\r\n\r\n"
              b"--- returned headers ---\r\nFrom: postmaster@mx.example.com\r\n"
              b"Message-ID: <" + mid.encode() + b">\r\n")
    s = build(store=store, clock=clock, srs=SRS)
    assert not any(d.final for d in envelope(s, "<>", "<postmaster@example.com>"))
    result = message(s, [("From", "MAILER-DAEMON@victim.example"),
                         ("Subject", "Undelivered Mail Returned to Sender")], report)
    if forged:
        assert result.decision is CONTINUE
        assert not store.listed("blacklist", "forged@victim.example", clock.t)
    else:
        assert result.decision.action is Action.DISCARD
        assert store.listed("blacklist", "forged@victim.example", clock.t + 29 * 86400)
        assert "BLACKLIST: forged@victim.example (a reply to our DSN)" in caplog.messages


def test_dry_run_banned_ip_is_logged_once_and_the_message_goes_through(
        caplog: pytest.LogCaptureFixture) -> None:
    """A delayed connection-level reject in dry run: one DRYRUN line per
    message (at DATA), and end of message runs normally (headers, ACCEPT)."""
    caplog.set_level(logging.INFO, "bms")
    store = FakeStore()
    store.ban_ip(OUTSIDE, 1e12, "demerits")
    s = build(store=store, dry_run=True)
    assert not any(d.final for d in envelope(s, "<a@sender.example>", "<bob@example.com>"))
    result = message(s)
    assert result.decision is CONTINUE
    assert any(e.name == "Authentication-Results" for e in result.edits)
    assert caplog.messages.count(f"DRYRUN REJECT: BANNED IP {OUTSIDE}") == 1
    assert "ACCEPT: 1 recipient, queue id Q1" in caplog.messages
