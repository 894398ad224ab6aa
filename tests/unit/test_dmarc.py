"""DMARC: record parsing, evaluation (alignment, p/sp/np, pct, t=y, DNS
errors), the access-file verdict and the pipeline step (reply, quarantine,
dry run, Authentication-Results), with fakes for DNS and the access file."""

from __future__ import annotations

import logging
import socket

import pytest
from fakes import FakeAccess, FakeClock, FakeStore
from hypothesis import given
from hypothesis import strategies as st

from bmslib.interfaces import DnsTempError
from bmslib.policy.connection import ConnectionSettings, IpList
from bmslib.policy.decision import CONTINUE, AccessKind, AccessValue, Action
from bmslib.policy.dkim import DkimResult
from bmslib.policy.dmarc import DmarcCheck, DmarcOutcome, aligned, org_domain
from bmslib.policy.dmarcrecord import parse_record, select_record
from bmslib.policy.dmarcstep import verdict
from bmslib.policy.edits import EomResult
from bmslib.policy.pipeline import PolicySettings, Services, SmtpSession, SpfResult

from .helpers import PROPERTY


class Dns:
    """TXT records and existing names; names in ``broken`` time out."""

    def __init__(self, txt: dict[str, list[str]], exists: tuple[str, ...] = (),
                 broken: tuple[str, ...] = ()) -> None:
        self.records = {k: [v.encode() for v in vs] for k, vs in txt.items()}
        self.exists = exists
        self.broken = broken
        self.asked: list[str] = []

    def _ask(self, name: str) -> None:
        self.asked.append(name)
        if name in self.broken:
            raise DnsTempError(name)

    def txt(self, name: str) -> list[bytes]:
        self._ask(name)
        return self.records.get(name, [])

    def addresses(self, name: str) -> list[str]:
        self._ask(name)
        return ["192.0.2.1"] if name in self.exists else []

    def mx(self, domain: str) -> list[tuple[int, str]]:
        return []

    def ptr(self, ip: str) -> list[str]:
        return []


RECORDS = {
    "_dmarc.reject.example": [
        "v=DMARC1; p=reject; sp=quarantine; np=reject; rua=mailto:r@x.example"],
    "_dmarc.quar.example": ["v=DMARC1; p=quarantine"],
    "_dmarc.none.example": ["v=DMARC1; p=none"],
    "_dmarc.strict.example": ["v=DMARC1; p=reject; adkim=s; aspf=s"],
    "_dmarc.half.example": ["v=DMARC1; p=reject; pct=50"],
    "_dmarc.test.example": ["v=DMARC1; p=reject; t=y"],
    "_dmarc.two.example": ["v=DMARC1; p=reject", "v=DMARC1; p=none"],
    "_dmarc.spf.example": ["v=spf1 -all"],
    "_dmarc.other.example": ["v=DMARC1; p=none"],
}


def check(from_: str, spf: str = "fail", spf_domain: str = "other.example",
          dkim: tuple[DkimResult, ...] = (), rand: float = 0.0, **dns: tuple[str, ...]
          ) -> DmarcOutcome:
    return DmarcCheck(Dns(RECORDS, **dns), lambda: rand)([from_], spf, spf_domain, dkim)


def test_record_tags_defaults_and_leniency() -> None:
    r = parse_record("v=DMARC1; p=reject; pct=20; adkim=s; rua=mailto:A@B.example,mailto:c@d")
    assert r is not None and (r.p, r.sp, r.np, r.pct, r.adkim, r.aspf) == (
        "reject", "reject", "reject", 20, "s", "r")
    assert r.rua == ("a@b.example", "c@d")
    r = parse_record("v=DMARC1; p=bogus; sp=none; pct=300")
    assert r is not None and (r.p, r.sp, r.pct, r.p_valid) == ("none", "none", 100, False)
    assert parse_record("v=spf1 -all") is None
    assert parse_record("v=DMARC1; p=reject" + "x" * 5000) is None
    assert select_record([b"v=DMARC1; p=none", b"v=DMARC1; p=reject"]) == (
        None, "2 DMARC records")
    assert select_record([b"hello", b"\xff\xfe"]) == (None, "")


def test_org_domain_and_alignment_use_the_public_suffix_list() -> None:
    assert org_domain("a.b.example.co.uk") == "example.co.uk"
    assert org_domain("co.uk") == "co.uk"
    assert aligned("mail.example.com", "example.com", "r")
    assert not aligned("mail.example.com", "example.com", "s")
    assert not aligned("example.co.uk", "other.co.uk", "r")
    assert not aligned("", "example.com", "r")
    assert org_domain("Mail.Example.COM.") == "example.com"  # the cache sees one name


def test_org_domain_caches_only_names_dns_allows() -> None:
    from bmslib.policy import dmarc
    long_name = "a." * 150 + "example.com"
    before = dmarc._org_domain.cache_info().currsize
    assert org_domain(long_name) == "example.com"
    assert dmarc._org_domain.cache_info().currsize == before
    org_domain("cached-once.example.net")
    assert dmarc._org_domain.cache_info().currsize == before + 1
    assert dmarc._org_domain.cache_info().maxsize == 4096


@pytest.mark.parametrize(("from_", "spf", "spf_domain", "dkim_domain", "result", "policy"), [
    ("reject.example", "pass", "reject.example", "", "pass", "reject"),
    ("reject.example", "pass", "bounce.reject.example", "", "pass", "reject"),  # relaxed
    ("reject.example", "pass", "other.example", "", "fail", "reject"),
    ("reject.example", "fail", "reject.example", "sub.reject.example", "pass", "reject"),
    ("strict.example", "pass", "mail.strict.example", "sub.strict.example", "fail", "reject"),
    ("strict.example", "fail", "", "strict.example", "pass", "reject"),
    ("quar.example", "softfail", "quar.example", "", "fail", "quarantine"),
    ("none.example", "none", "", "", "fail", "none"),
    ("nodmarc.example", "fail", "", "", "none", ""),
])
def test_alignment_and_result(from_: str, spf: str, spf_domain: str, dkim_domain: str,
                              result: str, policy: str) -> None:
    dkim = (DkimResult("pass", domain=dkim_domain),) if dkim_domain else ()
    o = check(from_, spf, spf_domain, dkim)
    assert (o.result, o.policy, o.domain) == (result, policy, from_)


def test_subdomains_get_sp_and_nonexistent_ones_np() -> None:
    o = check("www.reject.example", exists=("www.reject.example",))
    assert (o.result, o.policy, o.disposition) == ("fail", "quarantine", "quarantine")
    o = check("nowhere.reject.example")
    assert (o.result, o.policy) == ("fail", "reject")


def test_pct_samples_with_the_injected_random_source_and_t_y_is_weaker() -> None:
    assert check("half.example", rand=0.49).disposition == "reject"
    o = check("half.example", rand=0.5)
    assert (o.policy, o.disposition) == ("reject", "quarantine")
    assert check("test.example").disposition == "quarantine"


def test_dns_errors_and_bad_records_never_fail_the_message() -> None:
    assert check("reject.example", broken=("_dmarc.reject.example",)).result == "temperror"
    o = check("two.example")
    assert (o.result, o.reason) == ("permerror", "2 DMARC records")
    assert o.authres() == "dmarc=permerror (2 DMARC records) header.from=two.example"
    assert check("spf.example").result == "none"
    o = DmarcCheck(Dns(RECORDS))(["a.example", "b.example"], "pass", "a.example", ())
    assert (o.result, o.reason) == ("permerror", "several From: domains")
    assert DmarcCheck(Dns(RECORDS))([], "pass", "a.example", ()).result == "permerror"


REJECT_FAIL = DmarcOutcome("fail", "reject.example", "reject", "reject", "fail", "none")


@pytest.mark.parametrize(("disposition", "table", "action", "quarantine"), [
    ("reject", {}, Action.REJECT, False),
    ("quarantine", {}, Action.CONTINUE, True),
    ("none", {}, Action.CONTINUE, False),
    ("reject", {("DMARC-Reject", "reject.example"): AccessValue(AccessKind.OK)},
     Action.CONTINUE, False),
    ("reject", {("DMARC-Reject", "reject.example"): AccessValue(AccessKind.QUARANTINE)},
     Action.CONTINUE, True),
    ("none", {("DMARC-None", "reject.example"): AccessValue(AccessKind.REJECT)},
     Action.REJECT, False),
    ("quarantine", {("DMARC-Quarantine", "reject.example"): AccessValue(AccessKind.TEMPFAIL)},
     Action.TEMPFAIL, False),
    ("reject", {("DMARC-Reject", "reject.example"): AccessValue(
        AccessKind.ERROR, "550", "5.7.0", "go away")}, Action.REJECT, False),
])
def test_verdict_honours_the_policy_unless_the_access_file_says_otherwise(
        disposition: str, table: dict[tuple[str, str], AccessValue], action: Action,
        quarantine: bool) -> None:
    outcome = DmarcOutcome("fail", "reject.example", "reject", disposition, "fail", "none")
    v = verdict(outcome, FakeAccess(table), whitelisted=False)
    assert v.decision.action is action
    assert bool(v.quarantine) is quarantine
    if action is Action.REJECT:
        assert v.decision.code == "550"


def test_verdict_of_a_whitelisted_or_passing_message_is_to_accept() -> None:
    assert not verdict(REJECT_FAIL, FakeAccess({}), whitelisted=True).decision.final
    ok = DmarcOutcome("pass", "reject.example", "reject")
    assert not verdict(ok, FakeAccess({}), whitelisted=False).decision.final


# --- the pipeline step ---------------------------------------------------------------

def run_session(from_domain: str, *, spf: str = "fail", dry_run: bool = False,
                access: FakeAccess | None = None, store: FakeStore | None = None,
                rand: float = 0.0) -> EomResult:
    """One message from 198.51.100.9, MAIL FROM a@other.example, through the
    pipeline with DMARC (``rand``: the pct sampling draw)."""
    dns = Dns(RECORDS)
    settings = PolicySettings(connection=ConnectionSettings(internal_connect=IpList(
        ["10.0.0.0/8"])), dry_run=dry_run)
    services = Services(access or FakeAccess({}), store or FakeStore(), FakeClock(),
                        resolver=dns,
                        spf=lambda conn, helo, sender: SpfResult(CONTINUE, result=spf),
                        dmarc=DmarcCheck(dns, lambda: rand))
    s = SmtpSession(settings, services)
    s.connect("mail.other.example", socket.AF_INET, ("198.51.100.9", 4000),
              lambda n: "mx.example.com" if n == "j" else None)
    s.helo("mail.other.example")
    s.mail("<a@other.example>", [], lambda n: None)
    s.rcpt("<bob@example.com>", [])
    s.data()
    s.header("From", f"Someone <someone@{from_domain}>")
    s.header("Subject", "hi")
    s.eoh()
    s.body(b"Hello.\r\n")
    return s.eom(lambda n: "Q1" if n == "i" else None)


def test_pipeline_rejects_per_policy_and_logs_one_line(caplog: pytest.LogCaptureFixture
                                                       ) -> None:
    caplog.set_level(logging.INFO, "bms")
    result = run_session("reject.example")
    d = result.decision
    assert d.action is Action.REJECT and d.code == "550"
    assert "DMARC: fail policy=reject header.from=reject.example (spf=fail, dkim=none)" \
        in caplog.messages
    assert any(m.startswith("REJECT: DMARC fail policy=reject") for m in caplog.messages)


def test_pipeline_quarantine_and_authentication_results() -> None:
    result = run_session("quar.example")
    assert result.quarantine.startswith("DMARC fail policy=quarantine")
    [ar] = [e.value for e in result.edits
            if e.name == "Authentication-Results"]
    assert ("dmarc=fail (p=quarantine sp=quarantine pct=100 dis=QUARANTINE) "
            "header.from=quar.example") in ar


def test_pipeline_dry_run_logs_and_delivers(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    result = run_session("reject.example", dry_run=True)
    assert not result.decision.final
    assert any(m.startswith("DRYRUN REJECT: DMARC fail") for m in caplog.messages)
    result = run_session("quar.example", dry_run=True)
    assert result.quarantine == ""
    assert any(m.startswith("DRYRUN QUARANTINE: DMARC fail") for m in caplog.messages)


def test_pipeline_pass_through_aligned_spf() -> None:
    result = run_session("other.example", spf="pass")
    assert not result.decision.final


@PROPERTY
@given(st.lists(st.binary(max_size=300) | st.text(max_size=300).map(
    lambda t: ("v=DMARC1; " + t).encode("utf-8", "surrogateescape")), max_size=4))
def test_any_txt_answer_gives_a_record_none_or_a_reason(texts: list[bytes]) -> None:
    record, problem = select_record(texts)
    assert record is None or (record.p in ("none", "quarantine", "reject")
                              and 0 <= record.pct <= 100 and not problem)
    if record is not None:
        assert "\n" not in record.published() and "\r" not in record.published()
