"""``bmslib.milter.BmsMilter`` under ``TestCtx``: the policy pipeline's decisions
as the MTA sees them (result codes, reply text on the wire, header edits at
end of message), with fakes for the outside world and a fixed SPF result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeAccess, FakeClock, FakeStore

import Milter
from bmslib.content.defang import DefangSettings
from bmslib.milter import BmsMilter
from bmslib.policy.address import Address, parse_address
from bmslib.policy.checks import CheckSettings
from bmslib.policy.connection import Connection, ConnectionSettings, IpList
from bmslib.policy.decision import CONTINUE, AccessKind, AccessValue, Decision
from bmslib.policy.message import MessageSettings
from bmslib.policy.pipeline import (
    CbvRequest,
    PolicySettings,
    Services,
    SmtpSession,
    SpfResult,
)
from bmslib.policy.recipients import RecipientSettings, address_set
from bmslib.spool import save_original
from Milter import testctx
from Milter.protocol import constants as C
from Milter.protocol import replies as R

from .helpers import UseFactory

RECEIVER = "mx.example.com"
OUTSIDE = "198.51.100.9"
INSIDE = "192.168.1.7"

SETTINGS = PolicySettings(
    connection=ConnectionSettings(IpList(["192.168.0.0/16"]), IpList(["203.0.113.25"])),
    checks=CheckSettings(internal_domains=("example.com",)))

MESSAGE = b"""From: alice@b.example
To: bob@example.com
Subject: hello
Authentication-Results: mx.example.com; spf=pass smtp.mailfrom=forged@b.example
Received-SPF: pass (forged) receiver=mx.example.com; client-ip=192.0.2.1
Authentication-Results: other.example; dkim=pass
Authentication-Results: MX.EXAMPLE.COM; dkim=pass header.d=forged

body
"""


class FixedSpf:
    """The SpfStep: always the same result; records what it was asked."""

    def __init__(self, result: SpfResult) -> None:
        self.result = result
        self.calls: list[tuple[str | None, str, str]] = []

    def __call__(self, conn: Connection, helo: str, sender: Address) -> SpfResult:
        self.calls.append((conn.ip, helo, sender.mailbox))
        return self.result


class FixedCbv:
    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.calls: list[CbvRequest] = []

    def __call__(self, request: CbvRequest, variables: Mapping[str, str]) -> Decision:
        self.calls.append(request)
        return self.decision


NO_SPF_VERDICT = SpfResult(CONTINUE)


class Harness:
    def __init__(self, use_factory: UseFactory, spf: SpfResult = NO_SPF_VERDICT,
                 cbv: Decision | None = None, settings: PolicySettings = SETTINGS) -> None:
        self.spf = FixedSpf(spf)
        self.cbv = FixedCbv(cbv) if cbv is not None else None
        self.store = FakeStore()
        self.sessions: list[SmtpSession] = []
        self.settings = settings

        def factory() -> Milter.Base:
            session = SmtpSession(self.settings, Services(
                FakeAccess({}), self.store, FakeClock(), spf=self.spf, cbv=self.cbv))
            self.sessions.append(session)
            return BmsMilter(session)

        use_factory(factory)
        self.ctx = testctx.TestCtx()
        self.ctx._setsymval("j", RECEIVER)
        self.ctx._setsymval("i", "QID42")

    @property
    def session(self) -> SmtpSession:
        return self.sessions[-1]

    def last_wire_reply(self) -> R.Reply:
        return self.ctx._replies[-1]


def feed(h: Harness, sender: str = "a@b.example", message: bytes = MESSAGE) -> int:
    return h.ctx._feedFile(BytesIO(message), sender, "bob@example.com")


# --- negotiation -------------------------------------------------------------------------

def test_header_and_body_are_noreply_and_every_stage_is_asked_for(
        use_factory: UseFactory) -> None:
    h = Harness(use_factory)
    assert h.ctx._connect("client.example.net", "client.example.net", OUTSIDE) == Milter.CONTINUE
    proto = h.ctx._protocol
    assert proto & Milter.P_NR_HDR and proto & Milter.P_NR_BODY  # they never answer
    for step in (Milter.P_NOCONNECT, Milter.P_NOHELO, Milter.P_NOMAIL, Milter.P_NORCPT,
                 Milter.P_NODATA, Milter.P_NOHDRS, Milter.P_NOEOH, Milter.P_NOBODY):
        assert not proto & step
    assert h.ctx._envfrom("<a@b.example>") == Milter.CONTINUE
    assert h.ctx._envrcpt("<bob@example.com>") == Milter.CONTINUE
    assert h.ctx._data() == Milter.CONTINUE
    assert h.ctx._header("Subject", "hi") == Milter.CONTINUE
    assert h.ctx._replies == []  # no reply packet for a header
    assert h.session.subject == "hi" and h.session.header_counts == {"subject": 1}


# --- replies -------------------------------------------------------------------------------

def test_zombie_pc_is_rejected_at_mail_with_both_reply_lines(use_factory: UseFactory) -> None:
    h = Harness(use_factory)
    assert h.ctx._connect("pc.example.com", "pc", INSIDE) == Milter.CONTINUE
    assert h.ctx._envfrom("<debby@fedex.com>") == Milter.REJECT
    first = "Your PC is using an unauthorized MAIL FROM domain (fedex.com)."
    second = "It is either badly misconfigured or controlled by someone else."
    assert h.ctx._reply == ("550", "5.7.1", first, second)
    assert h.last_wire_reply() == R.ReplyCode(
        f"550-5.7.1 {first}\r\n550 5.7.1 {second}".encode())
    assert h.spf.calls == []  # internal: no SPF
    # The same PC with one of our domains goes on.
    assert h.ctx._envfrom("<debby@example.com>") == Milter.CONTINUE


@pytest.mark.parametrize(("decision", "result", "reply", "wire"), [
    (Decision.reject("SPF fail", "100% forged, 50%s off"), Milter.REJECT,
     ("550", "5.7.1", "100%% forged, 50%%s off"), b"550 5.7.1 100%% forged, 50%%s off"),
    (Decision.reject("SPF fail", "%%"), Milter.REJECT,
     ("550", "5.7.1", "%%%%"), b"550 5.7.1 %%%%"),
    (Decision.tempfail("SPF temperror", "DNS said 50% of nothing", code="451",
                       xcode="4.4.3"), Milter.TEMPFAIL,
     ("451", "4.4.3", "DNS said 50%% of nothing"), b"451 4.4.3 DNS said 50%% of nothing"),
    # An access-file ERROR: value is sent as written (no extended code: none sent).
    (AccessValue(AccessKind.ERROR, "550", "", "go away").error_decision("SPF fail"),
     Milter.REJECT, ("550", None, "go away"), b"550 go away"),
    (AccessValue(AccessKind.ERROR, "554", "5.7.0", "").error_decision("SPF fail"),
     Milter.REJECT, ("554", "5.7.0", ""), b"554 5.7.0 "),
    (Decision.reject("SPF fail", "line one", "line two", "50% three"), Milter.REJECT,
     ("550", "5.7.1", "line one", "line two", "50%% three"),
     b"550-5.7.1 line one\r\n550-5.7.1 line two\r\n550 5.7.1 50%% three"),
])
def test_spf_decision_at_mail_reaches_setreply(
        use_factory: UseFactory, decision: Decision, result: int,
        reply: tuple[str | None, ...], wire: bytes) -> None:
    h = Harness(use_factory, spf=SpfResult(decision, result="fail"))
    assert h.ctx._connect("client.example.net", "client.example.net", OUTSIDE) == Milter.CONTINUE
    assert h.ctx._envfrom("<a@b.example>") == result
    assert h.spf.calls == [(OUTSIDE, "client.example.net", "a@b.example")]
    assert h.ctx._reply == reply
    assert h.last_wire_reply() == R.ReplyCode(wire)


@pytest.mark.parametrize(("decision", "result", "code"), [
    (Decision.reject("SPF fail", "SPF says no", delay=True), Milter.REJECT, b"550 5.7.1"),
    (Decision.tempfail("CBV", "try later", code="450", xcode="4.2.0", delay=True),
     Milter.TEMPFAIL, b"450 4.2.0"),
])
def test_delayed_spf_reject_is_answered_at_data(
        use_factory: UseFactory, decision: Decision, result: int, code: bytes) -> None:
    h = Harness(use_factory, spf=SpfResult(decision, result="fail"))
    assert h.ctx._connect("client.example.net", "client.example.net", OUTSIDE) == Milter.CONTINUE
    assert h.ctx._envfrom("<a@b.example>") == Milter.CONTINUE
    assert h.ctx._reply is None
    assert h.ctx._envrcpt("<bob@example.com>") == Milter.CONTINUE
    assert h.ctx._envrcpt("<carol@example.com>") == Milter.CONTINUE
    assert [r.mailbox for r in h.session.recipients] == ["bob@example.com", "carol@example.com"]
    assert h.ctx._data() == result
    assert h.ctx._reply is not None and h.ctx._reply[:2] == (decision.code, decision.xcode)
    assert h.last_wire_reply() == R.ReplyCode(code + b" " + decision.lines[0].encode())


def test_numeric_helo_from_outside_is_rejected_at_helo(use_factory: UseFactory) -> None:
    h = Harness(use_factory)
    assert h.ctx._connect("client.example.net", "[192.0.2.1]", OUTSIDE) == Milter.REJECT
    assert h.ctx._reply == ("550", "5.7.1", "Hello name cannot be an IP address.")
    assert h.ctx.closed


def test_dry_run_never_sets_a_reply(use_factory: UseFactory) -> None:
    dry = PolicySettings(connection=SETTINGS.connection, checks=SETTINGS.checks, dry_run=True)
    h = Harness(use_factory, spf=SpfResult(Decision.reject("SPF fail", "no")), settings=dry)
    assert h.ctx._connect("client.example.net", "[192.0.2.1]", OUTSIDE) == Milter.CONTINUE
    assert h.ctx._envfrom("<a@b.example>") == Milter.CONTINUE
    assert h.ctx._reply is None


# --- end of message ----------------------------------------------------------------------

def test_eom_inserts_our_headers_at_the_top_and_deletes_forged_ones(
        use_factory: UseFactory) -> None:
    received = f"pass ({RECEIVER}: domain of b.example designates {OUTSIDE}) receiver={RECEIVER}"
    spf = SpfResult(CONTINUE, received_spf=received,
                    authres=("spf=pass smtp.mailfrom=a@b.example",), result="pass")
    h = Harness(use_factory, spf=spf)
    assert h.ctx._connect("client.example.net", "client.example.net", OUTSIDE) == Milter.CONTINUE
    assert feed(h) == Milter.CONTINUE
    authres = (f"{RECEIVER};\n\tiprev=pass policy.iprev={OUTSIDE};\n\t"
               "spf=pass smtp.mailfrom=a@b.example")
    edits = [r for r in h.ctx._replies if not isinstance(r, R.Verdict)]
    assert edits == [
        # the forged ones (claiming our authserv-id), later occurrences first
        R.ChangeHeader(3, b"Authentication-Results", b""),
        R.ChangeHeader(1, b"Authentication-Results", b""),
        R.ChangeHeader(1, b"Received-SPF", b""),
        R.InsertHeader(0, b"Received-SPF", received.encode()),
        R.InsertHeader(0, b"Authentication-Results", authres.encode()),
    ]
    assert h.last_wire_reply() == R.Verdict(C.SMFIR_CONTINUE)
    assert h.ctx._headerschanged and h.ctx._reply is None
    assert h.ctx._msg is not None
    assert h.ctx._msg["Received-SPF"] == received
    assert h.ctx._msg["Authentication-Results"] == authres


def test_eom_without_spf_still_reports_iprev(use_factory: UseFactory) -> None:
    h = Harness(use_factory)
    assert h.ctx._connect("[198.51.100.9]", "client.example.net", OUTSIDE) == Milter.CONTINUE
    assert feed(h, message=b"Subject: x\n\nbody\n") == Milter.CONTINUE
    edits = [r for r in h.ctx._replies if not isinstance(r, R.Verdict)]
    assert edits == [R.InsertHeader(0, b"Authentication-Results",
                                    f"{RECEIVER};\n\tiprev=fail policy.iprev={OUTSIDE}"
                                    .encode())]


def test_cbv_failure_at_eom_reaches_setreply_and_makes_no_edits(
        use_factory: UseFactory) -> None:
    request = CbvRequest(parse_address("<a@b.example>"), None, "softfail")
    h = Harness(use_factory,
                spf=SpfResult(CONTINUE, received_spf="softfail x", cbv=request,
                              result="softfail"),
                cbv=Decision.tempfail("CBV", "CBV: 50% of MXes down", code="450",
                                      xcode="4.2.0"))
    assert h.ctx._connect("client.example.net", "client.example.net", OUTSIDE) == Milter.CONTINUE
    assert feed(h) == Milter.TEMPFAIL
    assert h.cbv is not None and h.cbv.calls == [request]
    assert h.ctx._reply == ("450", "4.2.0", "CBV: 50%% of MXes down")
    assert h.last_wire_reply() == R.ReplyCode(b"450 4.2.0 CBV: 50%% of MXes down")
    assert not any(isinstance(r, (R.InsertHeader, R.ChangeHeader, R.AddHeader))
                   for r in h.ctx._replies)
    assert not h.ctx._headerschanged


def test_second_message_on_the_connection_starts_clean(use_factory: UseFactory) -> None:
    """A message reject at MAIL does not stick to the next MAIL FROM."""
    h = Harness(use_factory)
    assert h.ctx._connect("pc.example.com", "pc", INSIDE) == Milter.CONTINUE
    assert h.ctx._envfrom("<x@fedex.com>") == Milter.REJECT
    h.ctx._reply = None
    assert feed(h, "joe@example.com", b"Subject: ok\n\nbody\n") == Milter.CONTINUE
    assert h.ctx._reply is None
    assert len(h.sessions) == 1


def test_zombie_reply_with_a_very_long_domain_is_still_a_reject(
        use_factory: UseFactory) -> None:
    h = Harness(use_factory)
    assert h.ctx._connect("pc.example.com", "pc", INSIDE) == Milter.CONTINUE
    assert h.ctx._envfrom("<debby@" + "x" * 1000 + ".example>") == Milter.REJECT
    assert h.ctx._reply is not None and h.ctx._reply[:2] == ("550", "5.7.1")


# --- content stage: body replacement, header changes, recipients -------------------------

ATTACHMENT_MESSAGE = (b"From: a@b.example\nTo: bob@example.com\nSubject: tool\nMIME-Version: 1.0\n"
                      b"Content-Type: application/octet-stream; name=\"tool.exe\"\n"
                      b"Content-Transfer-Encoding: base64\n\nTVqQAAMAAAAEAAAA\n")


def test_a_message_that_is_the_attachment_gets_new_headers_body_and_recipients(
        use_factory: UseFactory, tmp_path: Path) -> None:
    settings = PolicySettings(connection=SETTINGS.connection, checks=SETTINGS.checks,
                              message=MessageSettings(
                                  defang=DefangSettings(banned_exts=frozenset({"exe"})),
                                  recipients=RecipientSettings(
                                      wiretap_users=address_set(["a@b.example"], False),
                                      wiretap_dest="spy@example.com")))
    h = Harness(use_factory, settings=settings)
    saved: list[str] = []

    def save(spool: Any) -> str:
        saved.append(save_original(spool, str(tmp_path)))
        return saved[-1]

    assert h.ctx._connect("client.example.net", "client.example.net", OUTSIDE) == Milter.CONTINUE
    h.session.services = replace(h.session.services, save=save)
    assert feed(h, message=ATTACHMENT_MESSAGE) == Milter.CONTINUE
    replies = h.ctx._replies
    changed = {r.name: r.value for r in replies if isinstance(r, R.ChangeHeader)}
    assert changed[b"Content-Type"].startswith(b"text/plain")
    assert changed[b"Content-Transfer-Encoding"] == b"7bit"
    bodies = [r for r in replies if isinstance(r, R.ReplaceBody)]
    new = b"".join(r.chunk for r in bodies)
    assert b"tool.exe" in new and saved[0].encode() in new and b"TVqQ" not in new
    assert any(isinstance(r, R.AddRcpt) and r.rcpt == b"<spy@example.com>" for r in replies)
    assert h.ctx._bodyreplaced and h.ctx._addrcpt == [("<spy@example.com>", None)]
