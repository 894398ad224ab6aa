"""SpfPolicy over a zone-table resolver: every result, the built-in defaults,
every access value, best guess, 3 strikes, the HELO policy, trusted
forwarders, delegate, and hostile input."""

from __future__ import annotations

import logging

import pytest
from fakes import FakeAccess

from bmslib.policy.address import parse_address
from bmslib.policy.decision import AccessKind, AccessValue, Action
from bmslib.policy.headertext import header_safe
from bmslib.policy.pipeline import SpfResult
from bmslib.policy.spf import SpfPolicy, SpfSettings, default_policy

from .spf_fakes import CLIENT, CLIENT6, connection, zone

A = AccessValue


def run(sender: str, helo: str = "helo.example", *, settings: SpfSettings | None = None,
        access: dict[tuple[str, str], AccessValue] | None = None, ip: str = CLIENT,
        dyn: bool = False) -> SpfResult:
    policy = SpfPolicy(settings or SpfSettings(), zone(), FakeAccess(access or {}))
    return policy(connection(ip, dyn=dyn), helo, parse_address(sender))


# sender, official result, action, cbv template ("-": no CBV, None: plain CBV)
DEFAULTS = [
    ("<a@pass.example>", "pass", Action.CONTINUE, "-"),
    ("<a@fail.example>", "fail", Action.REJECT, "-"),
    ("<a@softfail.example>", "softfail", Action.CONTINUE, None),
    ("<a@neutral.example>", "neutral", Action.CONTINUE, "-"),
    ("<a@none.example>", "none", Action.CONTINUE, "-"),
    ("<a@permerror.example>", "permerror", Action.REJECT, "-"),
    ("<a@temperror.example>", "temperror", Action.TEMPFAIL, "-"),
    ("<a@dnsdown.example>", "temperror", Action.TEMPFAIL, "-"),
    ("<a@laxpass.example>", "permerror", Action.CONTINUE, "permerror"),
]


@pytest.mark.parametrize(("sender", "official", "action", "template"), DEFAULTS)
def test_builtin_defaults(sender: str, official: str, action: Action,
                          template: str | None) -> None:
    r = run(sender)
    assert r.result == official
    assert r.decision.action is action
    if template == "-":
        assert r.cbv is None
    else:
        assert r.cbv is not None and r.cbv.template == template
    assert r.received_spf is not None
    assert r.received_spf.lower().startswith(official)
    assert "receiver=mx.example.test;" in r.received_spf
    assert f"client-ip={CLIENT};" in r.received_spf
    assert "identity=mailfrom" in r.received_spf
    domain = sender.split("@")[1].rstrip(">")
    assert r.authres == (f"spf={official} smtp.mailfrom=a@{domain}",)


def test_reply_codes() -> None:
    fail = run("<a@fail.example>").decision
    assert (fail.code, fail.xcode, fail.tag, fail.delay) == ("550", "5.7.1", "SPF fail", True)
    assert fail.lines[0].startswith("SPF fail: ")
    perm = run("<a@permerror.example>").decision
    assert (perm.code, perm.xcode) == ("550", "5.5.2")
    temp = run("<a@temperror.example>").decision
    assert (temp.code, temp.xcode, temp.delay) == ("451", "4.3.0", False)


@pytest.mark.parametrize(("settings", "result", "strike3", "kind"), [
    (SpfSettings(), "pass", False, AccessKind.OK),
    (SpfSettings(), "fail", False, AccessKind.REJECT),
    (SpfSettings(accept_fail=True), "fail", False, AccessKind.CBV),
    (SpfSettings(), "softfail", False, AccessKind.CBV),
    (SpfSettings(accept_softfail=True), "softfail", False, AccessKind.OK),
    (SpfSettings(reject_neutral=True), "softfail", False, AccessKind.REJECT),
    (SpfSettings(), "neutral", False, AccessKind.OK),
    (SpfSettings(reject_neutral=True), "neutral", False, AccessKind.REJECT),
    (SpfSettings(), "none", False, AccessKind.OK),
    (SpfSettings(best_guess=True), "none", True, AccessKind.CBV),
    (SpfSettings(best_guess=True, reject_noptr=True), "none", True, AccessKind.REJECT),
    (SpfSettings(reject_noptr=True), "none", True, AccessKind.REJECT),
    (SpfSettings(), "permerror", False, AccessKind.REJECT),
    (SpfSettings(), "temperror", False, AccessKind.TEMPFAIL),
])
def test_default_table(settings: SpfSettings, result: str, strike3: bool,
                       kind: AccessKind) -> None:
    assert default_policy(settings, result, "x.example", strike3) is kind


def test_domain_lists() -> None:
    s = SpfSettings(accept_fail=("fail.example",))
    assert run("<a@fail.example>", settings=s).cbv is not None
    assert default_policy(s, "fail", "other.example") is AccessKind.REJECT
    assert default_policy(s, "fail", "sub.fail.example") is AccessKind.CBV
    s = SpfSettings(reject_neutral=("aol.example",), accept_softfail=("soft.example",))
    assert default_policy(s, "neutral", "aol.example") is AccessKind.REJECT
    assert default_policy(s, "neutral", "other.example") is AccessKind.OK
    assert default_policy(s, "softfail", "aol.example") is AccessKind.REJECT
    assert default_policy(s, "softfail", "soft.example") is AccessKind.OK
    assert default_policy(s, "softfail", "other.example") is AccessKind.CBV


# access value -> (action, cbv template or "-", whitelist, blacklist, ban)
VALUES = [
    (A(AccessKind.OK), Action.CONTINUE, "-", False, False, False),
    (A(AccessKind.CBV), Action.CONTINUE, None, False, False, False),
    (A(AccessKind.DSN), Action.CONTINUE, "softfail", False, False, False),
    (A(AccessKind.REJECT), Action.REJECT, "-", False, False, False),
    (A(AccessKind.TEMPFAIL), Action.TEMPFAIL, "-", False, False, False),
    (A(AccessKind.WHITELIST), Action.CONTINUE, "-", True, False, False),
    (A(AccessKind.BLACKLIST), Action.REJECT, "-", False, True, False),
    (A(AccessKind.BAN), Action.REJECT, "-", False, False, True),
    (A(AccessKind.DISCARD), Action.DISCARD, "-", False, False, False),
    (A(AccessKind.ERROR, "550", "5.7.0", "go away"), Action.REJECT, "-", False, False, False),
    (A(AccessKind.ERROR, "421", "4.7.0", "later"), Action.TEMPFAIL, "-", False, False, False),
]


@pytest.mark.parametrize(("value", "action", "template", "white", "black", "ban"), VALUES)
def test_access_values(value: AccessValue, action: Action, template: str | None,
                       white: bool, black: bool, ban: bool) -> None:
    r = run("<a@softfail.example>", access={("SPF-Softfail", "a@softfail.example"): value})
    assert r.decision.action is action
    assert (r.whitelist, r.blacklist, r.ban) == (white, black, ban)
    if template == "-":
        assert r.cbv is None
    else:
        assert r.cbv is not None and r.cbv.template == template
        assert r.cbv.target.mailbox == "a@softfail.example" and r.cbv.result == "softfail"
    if value.kind is AccessKind.ERROR:
        assert (r.decision.code, r.decision.xcode, r.decision.lines) == (
            value.code, value.xcode, (value.text,))


def test_lookup_key_and_subject() -> None:
    access = FakeAccess({})
    SpfPolicy(SpfSettings(), zone(), access)(connection(), "helo.example",
                                             parse_address("<A.B@Fail.Example>"))
    assert access.asked[0] == ("SPF-Fail", "A.B@fail.example")


@pytest.mark.parametrize("value", [AccessKind.REJECT, AccessKind.BAN, AccessKind.TEMPFAIL,
                                   AccessKind.BLACKLIST])
def test_temperror_never_rejects_or_passes(value: AccessKind) -> None:
    r = run("<a@temperror.example>",
            access={("SPF-TempError", "a@temperror.example"): A(value)})
    assert r.decision.action is Action.TEMPFAIL
    assert (r.decision.code, r.decision.xcode) == ("451", "4.3.0")
    assert not r.ban and not r.whitelist


@pytest.mark.parametrize(("value", "template"), [(AccessKind.OK, "-"), (AccessKind.CBV, None),
                                                 (AccessKind.DSN, "temperror")])
def test_temperror_treated_as_none(value: AccessKind, template: str | None) -> None:
    r = run("<a@temperror.example>",
            access={("SPF-TempError", "a@temperror.example"): A(value)})
    assert r.decision.action is Action.CONTINUE and r.result == "temperror"
    assert (r.cbv.template if r.cbv else "-") == template


def test_pass_reject_is_immediate() -> None:
    r = run("<a@pass.example>", access={("SPF-Pass", "a@pass.example"): A(AccessKind.REJECT)})
    assert r.decision.action is Action.REJECT and not r.decision.delay


def test_exp_text_cannot_inject() -> None:
    d = run("<a@exp.example>").decision
    assert d.action is Action.REJECT
    assert all("\r" not in line and "\n" not in line for line in d.lines)


# --- best guess and 3 strikes ------------------------------------------------------

BG = SpfSettings(best_guess=True)


@pytest.mark.parametrize(("sender", "helo", "dyn", "key", "action", "template"), [
    # guessed pass: a/24 of guess.example contains the client
    ("<a@guess.example>", "helo.example", False, "SPF-Pass", Action.CONTINUE, "-"),
    # guessed neutral, good PTR: neutral key
    ("<a@none.example>", "helo.example", False, "SPF-Neutral", Action.CONTINUE, "-"),
    # DYN but a valid HELO (A = client): no strike
    ("<a@none.example>", "helo.example", True, "SPF-Neutral", Action.CONTINUE, "-"),
    # DYN, HELO valid by its own SPF pass
    ("<a@none.example>", "helospf.example", True, "SPF-Neutral", Action.CONTINUE, "-"),
    # 3 strikes: DYN, bad HELO, no SPF -> SPF-None, CBV
    ("<a@none.example>", "badhelo.example", True, "SPF-None", Action.CONTINUE, None),
    ("<a@none.example>", "[192.0.2.66]", True, "SPF-None", Action.CONTINUE, None),
    # HELO passes and is below the sender domain: promoted to pass
    ("<a@sub.example>", "helospf.sub.example", False, "SPF-Pass", Action.CONTINUE, "-"),
])
def test_best_guess(sender: str, helo: str, dyn: bool, key: str, action: Action,
                    template: str | None) -> None:
    access = FakeAccess({})
    r = SpfPolicy(BG, zone(), access)(connection(dyn=dyn), helo, parse_address(sender))
    assert r.result == "none"  # the header shows the official result
    assert r.received_spf is not None and r.received_spf.startswith("None ")
    assert access.asked[0][0] == key
    assert r.decision.action is action
    assert (r.cbv.template if r.cbv else "-") == template


def test_strike3_reject_and_dsn() -> None:
    s = SpfSettings(best_guess=True, reject_noptr=True)
    d = run("<a@none.example>", "badhelo.example", settings=s, dyn=True).decision
    assert d.action is Action.REJECT and d.tag == "no PTR, HELO or SPF" and d.delay
    r = run("<a@none.example>", "badhelo.example", settings=BG, dyn=True,
            access={("SPF-None", "a@none.example"): A(AccessKind.DSN)})
    assert r.cbv is not None and r.cbv.template == "strike3"


def test_none_without_best_guess_uses_spf_none_key() -> None:
    r = run("<a@none.example>", access={("SPF-None", "a@none.example"): A(AccessKind.REJECT)})
    assert r.decision.action is Action.REJECT


def test_guess_temperror_is_tempfail() -> None:
    zr = zone()
    zr.records[("nospf.example", "MX")] = [(10, "mx.broken.example")]
    zr.broken = frozenset({"mx.broken.example"})
    r = SpfPolicy(BG, zr, FakeAccess({}))(connection(), "helo.example",
                                          parse_address("<a@nospf.example>"))
    assert r.decision.action is Action.TEMPFAIL
    assert r.result == "none"


# --- HELO policy ----------------------------------------------------------------


@pytest.mark.parametrize(("helo", "value", "action", "template"), [
    ("helofail.example", None, Action.REJECT, "-"),
    ("heloneutral.example", None, Action.REJECT, "-"),
    ("helofail.example", A(AccessKind.OK), Action.CONTINUE, "-"),
    ("helofail.example", A(AccessKind.DSN), Action.CONTINUE, "heloerror"),
    ("helo.example", None, Action.CONTINUE, "-"),
])
def test_helo_policy(helo: str, value: AccessValue | None, action: Action,
                     template: str | None) -> None:
    key = "HELO-Fail" if "fail" in helo else "HELO-Neutral"
    r = run("<a@none.example>", helo, access={(key, helo): value} if value else {})
    assert r.decision.action is action
    if action is Action.REJECT:
        assert r.decision.tag == "hello SPF" and r.decision.delay
    assert (r.cbv.template if r.cbv else "-") == template
    if template == "heloerror":
        assert r.cbv is not None and r.cbv.target.mailbox == f"postmaster@{helo}"


def test_no_helo_policy_for_pass_or_null_sender() -> None:
    assert run("<a@pass.example>", "helofail.example").decision.action is Action.CONTINUE
    assert run("<>", "helofail.example").decision.action is Action.REJECT  # SPF fail of <>
    assert run("<>", "helofail.example").decision.tag == "SPF fail"


# --- forwarders, delegate ---------------------------------------------------------


def test_trusted_forwarder() -> None:
    s = SpfSettings(trusted_forwarder=("nofwd.example", "fwd.example"))
    access = FakeAccess({})
    r = SpfPolicy(s, zone(), access)(connection(), "helo.example",
                                     parse_address("<a@fail.example>"))
    assert r.whitelist and r.decision.action is Action.CONTINUE
    assert r.result == "fail" and r.authres == ("spf=fail smtp.mailfrom=a@fail.example",)
    assert ("SPF-Pass", "postmaster@fwd.example") in access.asked


def test_delegate() -> None:
    r = run("<a@deleg.example>", settings=SpfSettings(delegate="local.example"))
    assert r.result == "pass"
    assert run("<a@deleg.example>").result == "none"


# --- hostile input -----------------------------------------------------------------


@pytest.mark.parametrize(("sender", "helo", "ip", "result", "authres"), [
    ("<>", "helo.example", CLIENT, "none", "spf=none smtp.helo=helo.example"),
    ("<>", "", CLIENT, "none", "spf=none"),
    ("<postmaster>", "pass.example", CLIENT, "pass",
     "spf=pass smtp.mailfrom=postmaster@pass.example"),
    ('<"a b"@pass.example>', "helo.example", CLIENT, "pass",
     "spf=pass smtp.mailfrom=pass.example"),
    ('<"x@y"@pass.example>', "helo.example", CLIENT, "pass",
     "spf=pass smtp.mailfrom=pass.example"),
    ("<a@pass.example>", "h\xe9llo.example", CLIENT, "pass",
     "spf=pass smtp.mailfrom=a@pass.example"),
    ("<a@pass.example>", "bad\r\nX-Evil: 1", CLIENT, "pass",
     "spf=pass smtp.mailfrom=a@pass.example"),
    ("<a@pass.example>", "helo.example", CLIENT6, "pass",
     "spf=pass smtp.mailfrom=a@pass.example"),
    ("<a@fail.example>", "helo.example", CLIENT6, "fail",
     "spf=fail smtp.mailfrom=a@fail.example"),
    ("<a@b\xe9.example>", "helo.example", CLIENT, "none", None),
    ("<a@[192.0.2.1]>", "helo.example", CLIENT, "none", None),
    ("<a@..example>", "helo.example", CLIENT, "none", None),
    ("<a@" + "x" * 70 + ".example>", "helo.example", CLIENT, "none", None),
])
def test_hostile_input(sender: str, helo: str, ip: str, result: str,
                       authres: str | None) -> None:
    r = run(sender, helo, ip=ip)
    assert r.result in (result, "permerror")
    if authres is not None:
        assert r.result == result and r.authres == (authres,)
    assert r.received_spf is not None
    assert header_safe(r.received_spf) == r.received_spf  # printable ASCII only
    for item in r.authres:
        assert header_safe(item) == item


def test_no_ip_no_spf() -> None:
    r = SpfPolicy(SpfSettings(), zone(), FakeAccess({}))(
        connection(None), "helo.example", parse_address("<a@fail.example>"))
    assert r.decision.action is Action.CONTINUE and r.received_spf is None


def test_receiver_override() -> None:
    r = run("<a@pass.example>", settings=SpfSettings(receiver="spf.example.test"))
    assert r.received_spf is not None and "receiver=spf.example.test;" in r.received_spf


def test_query_time_budget() -> None:
    t = [0.0]

    def clock() -> float:
        t[0] += 10.0  # every look at the clock costs 10 s
        return t[0]

    policy = SpfPolicy(SpfSettings(query_time=15), zone(), FakeAccess({}), clock=clock)
    r = policy(connection(), "helo.example", parse_address("<a@include-chain.example>"))
    assert r.result in ("temperror", "none")
    policy2 = SpfPolicy(SpfSettings(query_time=5), zone(), FakeAccess({}), clock=clock)
    r2 = policy2(connection(), "helo.example", parse_address("<a@pass.example>"))
    assert r2.result == "temperror" and r2.decision.action is Action.TEMPFAIL


def test_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bms")
    run("<a@softfail.example>")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("SPF:")]
    assert lines == ["SPF: softfail policy CBV for a@softfail.example "
                     "(key SPF-Softfail, default)"]
