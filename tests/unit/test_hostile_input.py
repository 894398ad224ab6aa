"""Hostile and unusual SMTP input through the policy, table-driven: envelope
addresses (unqualified, quoted, source routes, address literals, ``<>``),
HELO names (8-bit as pymilter gives them on Python 3, control characters,
10k characters), client addresses (IPv6 in every spelling, v4-mapped, unix
socket, unknown family).  Every event must end in a defined Decision, never
an exception; no log line may carry a raw control character (the log is
read on terminals and parsed line by line) or grow without bound; reply
text must be sendable (no CR/LF/NUL, within MAXREPLYLEN after ``%``
doubling) and our header values must not break the header block."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fakes import FakeAccess, FakeClock, FakeStore

from bmslib.policy.address import parse_address
from bmslib.policy.arc import ArcSettings
from bmslib.policy.checks import CheckSettings
from bmslib.policy.connection import ConnectionSettings, IpList, classify
from bmslib.policy.decision import AccessKind, AccessValue, Action, Decision
from bmslib.policy.dkim import DkimSettings
from bmslib.policy.dmarc import DmarcCheck
from bmslib.policy.dnsbl import Blocklists, DnsblSettings, parse_zones
from bmslib.policy.greylist import GreylistSettings
from bmslib.policy.pipeline import PolicySettings, Services, SmtpSession
from bmslib.policy.reputation import ReputationSettings
from bmslib.policy.spf import SpfPolicy, SpfSettings
from bmslib.policy.srs import Srs, SrsSettings
from Milter.protocol.replytext import MAX_LINE

from .spf_fakes import CLIENT, CLIENT6, zone

UNSAFE = re.compile(r"[\x00-\x1f\x7f\u0080-\u009f\u2028\u2029\ud800-\udfff]")
# One log line: a few escaped fields of at most 500 characters (bmslib.log.escape).
MAX_LOG_LINE = 4000

EIGHT_BIT_HELO = b"h\xe9llo.example".decode("utf-8", "surrogateescape")
LATIN1_HELO = b"caf\xe9.\xff\xfe.example".decode("utf-8", "surrogateescape")
CONTROL_HELO = "evil.example\r\nREJECT: forged line\x1b[2J\x00\x7f\u2028"
LONG_HELO = "a" * 10_000
RECEIVER = "mx.example.com"


# --- parse_address ---------------------------------------------------------------------

# raw, local, domain, qualified, null
ADDRESSES: list[tuple[str, str, str, bool, bool]] = [
    ("<>", "", "", False, True),
    ("", "", "", False, True),
    ("  <>  ", "", "", False, True),
    ("<user>", "user", "", False, False),
    ("<Postmaster>", "Postmaster", "", False, False),
    ("user", "user", "", False, False),
    ("<user@>", "user", "", False, False),
    ("<User@X.Test>", "User", "x.test", True, False),
    ("<u@x.test.>", "u", "x.test", True, False),
    ("u@x.test", "u", "x.test", True, False),
    ('<"a b"@x.test>', "a b", "x.test", True, False),
    ('<"a@b"@x.test>', "a@b", "x.test", True, False),
    ('<"a\\"b"@x.test>', 'a"b', "x.test", True, False),
    ('<"a\\\\"@x.test>', "a\\", "x.test", True, False),
    ('<"unterminated@x.test>', '"unterminated@x.test', "", False, False),
    ("<@relay:user@x.test>", "user", "x.test", True, False),
    ("<@r1,@r2:user@x.test>", "user", "x.test", True, False),
    ("<@relay.example:\"q u\"@x.test>", "q u", "x.test", True, False),
    ("<u@[IPv6:2001:db8::1]>", "u", "[ipv6:2001:db8::1]", True, False),
    ("<u@[192.0.2.1]>", "u", "[192.0.2.1]", True, False),
    ("<a@b@x.test>", "a@b", "x.test", True, False),
    ("<u@x.test> SIZE=100", "u", "x.test", True, False),
    ("<u\x1b[31m@x\x00.test>", "u\x1b[31m", "x\x00.test", True, False),
    ("<\udce9@x.test>", "\udce9", "x.test", True, False),
    ("<<>>", "<>", "", False, False),
]


@pytest.mark.parametrize(("raw", "local", "domain", "qualified", "null"), ADDRESSES,
                         ids=[repr(a[0]) for a in ADDRESSES])
def test_parse_address(raw: str, local: str, domain: str, qualified: bool, null: bool) -> None:
    a = parse_address(raw)
    assert (a.raw, a.local, a.domain) == (raw, local, domain)
    assert (a.qualified, a.null) == (qualified, null)
    assert a.mailbox == (f"{local}@{domain}" if domain else local)


@pytest.mark.parametrize("raw", ["<@x.test>", "<@relay>", "<@>"])
def test_source_route_without_a_mailbox_is_not_a_qualified_sender(raw: str) -> None:
    a = parse_address(raw)
    assert not a.qualified and a.domain == ""


# --- classify ----------------------------------------------------------------------------

INTERNAL = IpList(["192.168.0.0/16", "2001:db8:1::/48", "127.*"])
TRUSTED = IpList(["192.0.2.25", "2001:db8::25"])


@dataclass(frozen=True)
class Client:
    family: int
    hostaddr: Any
    ip: str | None
    port: int
    local: bool
    internal: bool = False
    trusted: bool = False


CLIENTS: dict[str, Client] = {
    "ipv4": Client(socket.AF_INET, ("198.51.100.9", 4321), "198.51.100.9", 4321, False),
    "ipv6 4-tuple": Client(socket.AF_INET6, ("2001:db8::9", 4321, 0, 0), "2001:db8::9", 4321,
                           False),
    "ipv6 uncompressed": Client(socket.AF_INET6, ("2001:0DB8:0000::0009", 25),
                                "2001:db8::9", 25, False),
    "IPv6: prefix": Client(socket.AF_INET6, ("IPv6:2001:db8::9", 25), "2001:db8::9", 25, False),
    "ipv6: prefix lowercase": Client(socket.AF_INET6, ("ipv6:2001:db8::9", 25), "2001:db8::9",
                                     25, False),
    "bracketed IPv6:": Client(socket.AF_INET6, ("[IPv6:2001:db8::9]", 25), "2001:db8::9", 25,
                              False),
    "v4-mapped": Client(socket.AF_INET6, ("::ffff:198.51.100.9", 25, 0, 0), "198.51.100.9",
                        25, False),
    "v4-mapped internal": Client(socket.AF_INET6, ("::ffff:192.168.3.4", 25), "192.168.3.4",
                                 25, False, internal=True),
    "v4-mapped loopback": Client(socket.AF_INET6, ("::ffff:127.0.0.1", 25), "127.0.0.1", 25,
                                 True, internal=True),
    "ipv6 internal": Client(socket.AF_INET6, ("2001:db8:1::7", 25), "2001:db8:1::7", 25,
                            False, internal=True),
    "ipv6 trusted": Client(socket.AF_INET6, ("IPv6:2001:db8::25", 25), "2001:db8::25", 25,
                           False, trusted=True),
    "ipv6 loopback": Client(socket.AF_INET6, ("::1", 25, 0, 0), "::1", 25, True),
    "ipv6 scoped": Client(socket.AF_INET6, ("fe80::1%eth0", 25, 0, 2), "fe80::1%eth0", 25,
                          False),
    "unix socket": Client(socket.AF_UNIX, "/var/run/milter/sock", None, 0, True),
    "unknown family": Client(0, None, None, 0, True),
    "inet with no address": Client(socket.AF_INET, None, None, 0, True),
    "inet with a path": Client(socket.AF_INET, "/tmp/x", None, 0, True),
    "inet garbage": Client(socket.AF_INET, ("not-an-ip", 25), None, 25, True),
    "inet no port": Client(socket.AF_INET, ("198.51.100.9",), "198.51.100.9", 0, False),
}


@pytest.mark.parametrize("name", list(CLIENTS))
def test_classify_clients(name: str) -> None:
    c = CLIENTS[name]
    conn = classify(ConnectionSettings(INTERNAL, TRUSTED), "client.example.net", c.family,
                    c.hostaddr, RECEIVER, None)
    assert (conn.ip, conn.port, conn.local) == (c.ip, c.port, c.local)
    assert (conn.internal, conn.trusted) == (c.internal, c.trusted)
    assert conn.hostname == "client.example.net" and conn.receiver == RECEIVER


@pytest.mark.parametrize(("hostname", "expected", "dyn"), [
    ("unknown", "[2001:db8::9]", True),  # Postfix: no PTR
    ("[IPv6:2001:db8::9]", "[2001:db8::9]", True),  # sendmail: no PTR
    ("", "[2001:db8::9]", True),
    ("mail.example.net", "mail.example.net", False),
    (EIGHT_BIT_HELO, EIGHT_BIT_HELO, False),
])
def test_classify_hostnames(hostname: str, expected: str, dyn: bool) -> None:
    conn = classify(ConnectionSettings(), hostname, socket.AF_INET6,
                    ("IPv6:2001:db8::9", 25), RECEIVER, None)
    assert (conn.hostname, conn.dyn, conn.ptr_missing) == (expected, dyn, dyn)


# --- the whole pipeline -------------------------------------------------------------------

CHECKS = CheckSettings(internal_domains=("example.com",),
                       hello_blacklist=frozenset({"mx.example.com"}),
                       private_relay=frozenset({"aol.com"}),
                       check_user={"example.com": frozenset({"bob", "a b", "a@b"})})
SETTINGS = PolicySettings(connection=ConnectionSettings(INTERNAL, TRUSTED), checks=CHECKS,
                          reputation=ReputationSettings(max_demerits=2), log_headers=True)


def make_session(*, real_spf: bool = True, dry_run: bool = False,
                 access: dict[tuple[str, str], AccessValue] | None = None) -> SmtpSession:
    fake_access = FakeAccess(access or {})
    spf = SpfPolicy(SpfSettings(best_guess=True), zone(), fake_access) if real_spf else None
    settings = SETTINGS if not dry_run else PolicySettings(
        connection=SETTINGS.connection, checks=CHECKS, reputation=SETTINGS.reputation,
        log_headers=True, dry_run=True)
    return SmtpSession(settings, Services(fake_access, FakeStore(), FakeClock(),
                                          resolver=zone(), spf=spf))


def check_decision(d: object) -> None:
    assert isinstance(d, Decision) and isinstance(d.action, Action)
    if not d.final:
        return
    assert re.fullmatch(r"[45]\d\d", d.code), d
    assert d.xcode == "" or re.fullmatch(r"[45]\.\d{1,3}\.\d{1,3}", d.xcode), d
    assert d.xcode[:1] in ("", d.code[:1]), d
    assert d.tag and not UNSAFE.search(d.tag), d
    for line in d.lines:
        assert not re.search(r"[\r\n\x00]", line), d
        # what glue.BmsMilter sends: % doubled, UTF-8 with surrogates escaped
        wire = line.replace("%", "%%").encode("utf-8", "surrogateescape")
        assert len(wire) <= MAX_LINE, (len(wire), d.tag)


def check_logs(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records, "nothing logged"
    for record in caplog.records:
        message = record.getMessage()
        assert not UNSAFE.search(message), (record.name, message[:200])
        assert len(message) <= MAX_LOG_LINE, (record.name, len(message))


HEADER_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def check_header_value(value: str) -> None:
    """A header value we add: folded lines only, no control characters (8-bit
    text, as surrogates, passes through: SPEC §4a)."""
    assert value and not HEADER_UNSAFE.search(value.replace("\n\t", " ")), value[:200]


def macros(**extra: str) -> Any:
    table = {"j": RECEIVER, "i": "QID", **extra}
    return table.get


def transaction(s: SmtpSession, *, hostname: str, family: int, hostaddr: Any, helo: str,
                sender: str, rcpts: tuple[str, ...], auth: str | None = None,
                headers: tuple[tuple[str, str], ...] = ()) -> Iterator[object]:
    """Every event of one SMTP connection; yields what each returned (stops
    after a final answer, as an MTA would, except at RCPT)."""
    d = s.connect(hostname, family, hostaddr, macros())
    yield d
    d = s.helo(helo)
    yield d
    if isinstance(d, Decision) and d.final:
        return
    extra = {"{auth_authen}": auth} if auth is not None else {}
    d = s.mail(sender, ("SIZE=100",), macros(**extra))
    yield d
    if isinstance(d, Decision) and d.final:
        return
    for rcpt in rcpts:
        yield s.rcpt(rcpt, ())
    d = s.data()
    yield d
    if d.final:
        return
    for name, value in headers:
        yield s.header(name, value)
    result = s.eom(macros())
    yield result.decision
    for edit in result.edits:
        assert edit.op in ("insert", "delete")
        if edit.op == "insert":
            assert edit.index == 0
            check_header_value(edit.value)
        else:
            assert edit.index >= 1
    s.abort()


SENDERS = [
    "<>", "<user>", "<Postmaster>", '<"a b"@x.test>', '<"a@b"@x.test>',
    "<@relay:user@x.test>", "<@r1,@r2:user@pass.example>",
    "<u@[IPv6:2001:db8::1]>", "<u@[192.0.2.1]>", "<u@pass.example>", "<u@fail.example>",
    "<u@softfail.example>", "<u@neutral.example>", "<u@none.example>",
    "<u@permerror.example>", "<u@temperror.example>", "<u@exp.example>",
    "<ceo@example.com>", "<u\x1b[31m@x.test>", "<u@x\x7f.test>", "<\udce9@x.test>",
    "<u@" + "x" * 300 + ".test>", "garbage <<>>", "<",
]
HELOS = [
    "helo.example", EIGHT_BIT_HELO, LATIN1_HELO, CONTROL_HELO, LONG_HELO, "",
    "[192.0.2.1]", "[IPv6:2001:db8::1]", "2001:db8::1", "mx.example.com", "helo6.example",
    "x" * 300 + ".example",
]
RCPTS = (
    "<bob@example.com>", "<user>", '<"a b"@example.com>', '<"a@b"@example.com>',
    "<nobody@example.com>", "<x@aol.com>", "<MAILER-DAEMON@example.com>",
    "<u@[IPv6:2001:db8::1]>", "<@relay:bob@example.com>", "<>", "<r\u2028@example.com>",
)
HEADERS = (
    ("Subject", CONTROL_HELO),
    ("Subject", "second"),
    ("X-8bit", EIGHT_BIT_HELO),
    ("Authentication-Results", f"{RECEIVER}; spf=pass"),
    ("Received-SPF", f"pass receiver={RECEIVER}\r\n\tX-Evil: yes"),
    ("X-Long", LONG_HELO),
)
CONNECTS = {
    "ipv4": ("client.pass.example", socket.AF_INET, (CLIENT, 4000)),
    "ipv6": ("client.pass.example", socket.AF_INET6, (CLIENT6, 4000, 0, 0)),
    "IPv6: prefix": ("unknown", socket.AF_INET6, (f"IPv6:{CLIENT6}", 4000)),
    "v4-mapped": ("[::ffff:192.0.2.66]", socket.AF_INET6, (f"::ffff:{CLIENT}", 4000, 0, 0)),
    "internal v4": ("pc.example.com", socket.AF_INET, ("192.168.5.5", 4000)),
    "internal v6": ("pc.example.com", socket.AF_INET6, ("2001:db8:1::5", 4000, 0, 0)),
    "trusted": ("relay.example.net", socket.AF_INET6, ("2001:db8::25", 25, 0, 0)),
    "unix": ("localhost", socket.AF_UNIX, "/var/run/milter.sock"),
    "unknown": ("", 0, None),
    "8-bit PTR": (EIGHT_BIT_HELO + CONTROL_HELO, socket.AF_INET, (CLIENT, 4000)),
    "localhost PTR": ("localhost", socket.AF_INET, (CLIENT, 4000)),
}


def run(caplog: pytest.LogCaptureFixture, s: SmtpSession, **kw: Any) -> list[object]:
    caplog.set_level(logging.INFO)
    out = list(transaction(s, **kw))
    for d in out:
        check_decision(d)
    check_logs(caplog)
    return out


@pytest.mark.parametrize("sender", SENDERS, ids=[repr(x[:40]) for x in SENDERS])
@pytest.mark.parametrize("client", ["ipv4", "ipv6", "internal v4", "unix"])
def test_hostile_senders(caplog: pytest.LogCaptureFixture, sender: str, client: str) -> None:
    hostname, family, hostaddr = CONNECTS[client]
    run(caplog, make_session(), hostname=hostname, family=family, hostaddr=hostaddr,
        helo="helo.example", sender=sender, rcpts=RCPTS, headers=HEADERS)


@pytest.mark.parametrize("helo", HELOS, ids=[repr(x[:30]) for x in HELOS])
@pytest.mark.parametrize("client", ["ipv4", "ipv6", "trusted", "unknown"])
@pytest.mark.parametrize("sender", ["<>", "<user>", "<u@none.example>", "<u@pass.example>"])
def test_hostile_helos(caplog: pytest.LogCaptureFixture, helo: str, client: str,
                       sender: str) -> None:
    hostname, family, hostaddr = CONNECTS[client]
    run(caplog, make_session(), hostname=hostname, family=family, hostaddr=hostaddr,
        helo=helo, sender=sender, rcpts=("<bob@example.com>",), headers=HEADERS)


@pytest.mark.parametrize("client", list(CONNECTS))
@pytest.mark.parametrize("dry_run", [False, True])
def test_hostile_clients(caplog: pytest.LogCaptureFixture, client: str, dry_run: bool) -> None:
    hostname, family, hostaddr = CONNECTS[client]
    out = run(caplog, make_session(dry_run=dry_run), hostname=hostname, family=family,
              hostaddr=hostaddr, helo=EIGHT_BIT_HELO, sender="<u@[IPv6:2001:db8::1]>",
              rcpts=RCPTS, headers=HEADERS)
    if dry_run:
        assert not any(isinstance(d, Decision) and d.final for d in out)


@pytest.mark.parametrize("user", ["alice", "\udce9", "a" * 500, "Alice@Example.COM"])
@pytest.mark.parametrize("policy", [None, AccessKind.OK, AccessKind.REJECT])
def test_hostile_smtp_auth(caplog: pytest.LogCaptureFixture, user: str,
                           policy: AccessKind | None) -> None:
    access = {}
    if policy is not None:
        access[("SMTP-Auth", f"{user}@x.test")] = AccessValue(policy)
    hostname, family, hostaddr = CONNECTS["ipv6"]
    run(caplog, make_session(access=access), hostname=hostname, family=family,
        hostaddr=hostaddr, helo=CONTROL_HELO, sender="<u\x1b@x.test>", rcpts=RCPTS,
        auth=user)


@dataclass(frozen=True)
class Case:
    """Specific outcomes for hostile input (beyond "defined and safe")."""

    client: str
    helo: str
    sender: str
    stage: int  # index of the event that answers: 1 HELO, 2 MAIL, 3+ RCPT/DATA
    tag: str


def test_specific_outcomes(caplog: pytest.LogCaptureFixture) -> None:
    cases = [
        # numeric HELO from outside, in every spelling
        Case("ipv4", "[192.0.2.1]", "<u@pass.example>", 1, "numeric hello name"),
        Case("ipv6", "[IPv6:2001:db8::1]", "<u@pass.example>", 1, "numeric hello name"),
        Case("ipv6", "2001:db8::1", "<u@pass.example>", 1, "numeric hello name"),
        # our own name from outside
        Case("ipv6", "MX.Example.COM.", "<u@pass.example>", 1, "spam from self"),
        # empty HELO: refused at MAIL
        Case("ipv4", "", "<u@pass.example>", 2, "missing HELO"),
        # internal PC: zombie at MAIL for a foreign literal; <> and <user> are not zombies
        Case("internal v6", "pc", "<u@[IPv6:2001:db8::1]>", 2, "zombie PC"),
        Case("internal v4", "pc", "<u@[192.0.2.1]>", 2, "zombie PC"),
        Case("internal v4", "pc", '<"a@b"@x.test>', 2, "zombie PC"),
        Case("internal v4", "pc", "<@relay.example.com:user@x.test>", 2, "zombie PC"),
        # SPF fail (a delayed reject): answered at DATA
        Case("ipv4", "helo.example", "<u@fail.example>", -1, "SPF fail"),
        Case("v4-mapped", "helo.example", "<u@fail.example>", -1, "SPF fail"),
    ]
    for case in cases:
        caplog.clear()
        hostname, family, hostaddr = CONNECTS[case.client]
        out = run(caplog, make_session(), hostname=hostname, family=family, hostaddr=hostaddr,
                  helo=case.helo, sender=case.sender, rcpts=("<bob@example.com>",))
        d = out[case.stage]
        assert isinstance(d, Decision) and d.final and d.tag == case.tag, (case, out)
        assert all(not (isinstance(x, Decision) and x.final) for x in out[:case.stage]), case
    for client in ("internal v4", "internal v6"):
        for sender in ("<>", "<user>", "<Postmaster>"):
            hostname, family, hostaddr = CONNECTS[client]
            out = run(caplog, make_session(), hostname=hostname, family=family,
                      hostaddr=hostaddr, helo="pc", sender=sender, rcpts=("<bob@example.com>",))
            assert not any(isinstance(d, Decision) and d.final for d in out), (client, sender)


@pytest.mark.parametrize(("rcpt", "tag"), [
    ("<MAILER-DAEMON@example.com>", "robot recipient"),
    ("<x@AOL.COM.>", "RELAY"),
    ("<nobody@example.com>", "unknown user"),
    ('<"A B"@example.com>', None),
    ('<"a@b"@Example.com>', None),
    ("<@relay:Bob@example.com>", None),
    ("<user>", None),
    ("<u@[IPv6:2001:db8::1]>", None),
])
def test_hostile_recipients(caplog: pytest.LogCaptureFixture, rcpt: str,
                            tag: str | None) -> None:
    caplog.set_level(logging.INFO)
    s = make_session(real_spf=False)
    s.connect("client.example.net", socket.AF_INET6, (CLIENT6, 25, 0, 0), macros())
    s.helo("client.example.net")
    assert not s.mail("<a@b.example>", (), macros()).final
    d = s.rcpt(rcpt, ("NOTIFY=NEVER",))
    check_decision(d)
    assert (d.tag if d.final else None) == tag
    check_logs(caplog)


@pytest.mark.parametrize("local", ["nobody{n}", "nobody{n}\x1b[2J\r\nREJECT: forged@example.com"])
def test_ban_log_line_escapes_the_offending_address(local: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Demerits lead to a ban whose log line names the last offence, escaped."""
    caplog.set_level(logging.INFO)
    s = make_session(real_spf=False)
    s.connect("client.example.net", socket.AF_INET, ("198.51.100.9", 25), macros())
    s.helo("client.example.net")
    s.mail("<a@b.example>", (), macros())
    for n in range(3):
        assert s.rcpt(f"<{local.format(n=n)}@example.com>", ()).tag == "unknown user"
    assert any(r.getMessage().startswith("BANNED IP: 198.51.100.9") for r in caplog.records)
    check_logs(caplog)


def test_unqualified_and_null_senders_reach_spf_as_the_helo_identity(
        caplog: pytest.LogCaptureFixture) -> None:
    """``<>`` is checked as postmaster@HELO and ``<user>`` as user@HELO (pyspf)."""
    caplog.set_level(logging.INFO)
    for sender in ("<>", "<postmaster>"):
        s = make_session()
        s.connect("client.pass.example", socket.AF_INET, (CLIENT, 25), macros())
        s.helo("helospf.example")
        assert not s.mail(sender, (), macros()).final
        assert s.spf is not None and s.spf.received_spf is not None
        assert s.spf.received_spf.startswith("Pass "), s.spf.received_spf
        assert "helo=helospf.example" in s.spf.received_spf
    check_logs(caplog)



# --- defects found and fixed: they stay as regression tests --------------------------

@pytest.mark.parametrize("user", ["alice\r\nX-Injected: yes", "al\x1bice"])
def test_auth_user_cannot_inject_into_our_header(caplog: pytest.LogCaptureFixture,
                                                 user: str) -> None:
    hostname, family, hostaddr = CONNECTS["ipv6"]
    run(caplog, make_session(real_spf=False), hostname=hostname, family=family,
        hostaddr=hostaddr, helo="helo.example", sender="<u@example.com>",
        rcpts=("<bob@example.com>",), auth=user)


@pytest.mark.parametrize(("client", "sender", "auth"), [
    ("internal v4", "<u@" + "x" * 1000 + ".test>", None),
    ("ipv4", "<u@" + "x" * 1000 + ".test>", "alice"),
    ("ipv4", "<u@x.test>", "a" * 1000),
])
def test_reply_lines_fit_maxreplylen(caplog: pytest.LogCaptureFixture, client: str,
                                     sender: str, auth: str | None) -> None:
    hostname, family, hostaddr = CONNECTS[client]
    access = {("SMTP-Auth", f"{auth}@{parse_address(sender).domain}"):
              AccessValue(AccessKind.REJECT)} if auth else {}
    out = run(caplog, make_session(real_spf=False, access=access), hostname=hostname,
              family=family, hostaddr=hostaddr, helo="pc", sender=sender,
              rcpts=("<bob@example.com>",), auth=auth)
    assert isinstance(out[2], Decision) and out[2].action is Action.REJECT


# --- with greylisting, SRS and DKIM on ------------------------------------------------------

SRS_SETTINGS = SrsSettings(secret="s3cret", fwdomain="example.com",
                           srs_domains=frozenset({"example.com"}), reject_spoofed=True,
                           banned_users=frozenset({"postmaster", "mailer-daemon"}))
SRS_RCPTS = (
    *RCPTS,
    "<SRS0=xxxx=AB=x.test=u@example.com>", "<SRS0=@example.com>", "<SRS1=a==b@example.com>",
    "<srs0=\udce9\x1b=AB=x.test=u@example.com>", '<"SRS0=a=b=c=d"@example.com>',
    "<SRS0=" + "A" * 500 + "@example.com>",
)
DKIM_HEADERS = (
    *HEADERS,
    ("DKIM-Signature", "v=1; a=rsa-sha256; d=pass.example; s=x; b=AAAA; bh=\udce9=;"),
    ("DKIM-Signature", CONTROL_HELO),
    ("From", EIGHT_BIT_HELO),
)


def make_cluster_session() -> SmtpSession:
    fake_access = FakeAccess({})
    clock = FakeClock()
    settings = PolicySettings(
        connection=SETTINGS.connection, checks=CHECKS, reputation=SETTINGS.reputation,
        log_headers=True, greylist=GreylistSettings(time_minutes=0),
        dkim=DkimSettings(privkey=b"not a key", domain="example.com"))
    return SmtpSession(settings, Services(
        fake_access, FakeStore(), clock, resolver=zone(),
        spf=SpfPolicy(SpfSettings(best_guess=True), zone(), fake_access),
        srs=Srs(SRS_SETTINGS, clock.now)))


@pytest.mark.parametrize("sender", SENDERS, ids=[repr(x[:40]) for x in SENDERS])
@pytest.mark.parametrize("client", ["ipv6", "internal v4", "trusted"])
def test_hostile_input_with_greylist_srs_and_dkim(caplog: pytest.LogCaptureFixture,
                                                  sender: str, client: str) -> None:
    """Every hostile sender and SRS-looking recipient through greylisting,
    SRS bounce checks, DKIM verification and (failing) signing: defined
    verdicts and clean logs, never an exception."""
    hostname, family, hostaddr = CONNECTS[client]
    s = make_cluster_session()
    for _ in range(2):  # the retry passes greylisting (time 0) and reaches end of message
        run(caplog, s, hostname=hostname, family=family, hostaddr=hostaddr,
            helo="helo.example", sender=sender, rcpts=SRS_RCPTS, headers=DKIM_HEADERS)


# --- DMARC: hostile From: fields and DMARC records ------------------------------------

HOSTILE_DMARC_RECORDS: dict[str, list[object]] = {
    "_dmarc.pass.example": ["v=DMARC1; p=reject; pct=" + "9" * 500 + "; sp=\x00\r\n"],
    "_dmarc.fail.example": [b"v=DMARC1; p=quarantine; rua=mailto:\xff@\xfe; adkim=\x1b"],
    "_dmarc.softfail.example": ["v=DMARC1;;;=;p;p=;p==reject;" + "x=y;" * 2000],
    "_dmarc.neutral.example": ["v=DMARC1; p=reject", "V=dmarc1 ; p=none"],
    "_dmarc.none.example": ["v=DMARC1\u2028; p=reject"],
    "_dmarc.temperror.example": ["v=DMARC1; p=reject; np=reject; t=y; pct=-1"],
}
DMARC_FROMS = [
    "a@pass.example", "a@fail.example", "a@softfail.example", "a@neutral.example",
    "a@none.example", "a@temperror.example", "a@x.pass.example", f"a@{CONTROL_HELO}",
    f"a@{EIGHT_BIT_HELO}", f"a@{LONG_HELO}.example", "a@b\u00fccher.example", "",
    "a@pass.example, b@fail.example", "<>", "undisclosed-recipients:;",
    '"\r\nX: y" <a@pass.example>', "a@[192.0.2.1]", "a@.example", "a@-x-.example",
]


@pytest.mark.parametrize("from_", DMARC_FROMS, ids=[repr(x[:30]) for x in DMARC_FROMS])
@pytest.mark.parametrize("access", ["default", "ERROR"])
def test_hostile_from_and_dmarc_records(caplog: pytest.LogCaptureFixture, from_: str,
                                        access: str) -> None:
    """DMARC over hostile From: fields and records: defined verdicts, a safe
    dmarc= item in Authentication-Results, clean log lines."""
    resolver = zone()
    for name, texts in HOSTILE_DMARC_RECORDS.items():
        resolver.records[(name, "TXT")] = texts
    table = {} if access == "default" else {
        (tag, d): AccessValue(AccessKind.ERROR, "550", "5.7.1", "no thanks")
        for tag in ("DMARC-Reject", "DMARC-Quarantine", "DMARC-None")
        for d in ("pass.example", "fail.example", "softfail.example")}
    fake_access = FakeAccess(table)
    s = SmtpSession(SETTINGS, Services(
        fake_access, FakeStore(), FakeClock(), resolver=resolver,
        spf=SpfPolicy(SpfSettings(best_guess=True), resolver, fake_access),
        dmarc=DmarcCheck(resolver, lambda: 0.5)))
    hostname, family, hostaddr = CONNECTS["ipv4"]
    out = run(caplog, s, hostname=hostname, family=family, hostaddr=hostaddr,
              helo="helo.example", sender="<u@pass.example>", rcpts=("<bob@example.com>",),
              headers=(("From", from_), ("Subject", "dmarc")))
    assert any(m.startswith("DMARC: ") for m in caplog.messages) or any(
        isinstance(d, Decision) and d.final for d in out[:-1]), caplog.messages


# --- DNS blocklists: hostile answers ---------------------------------------------------

class HostileBlocklistDns:
    """Every name is listed, with junk answers and TXT records."""

    def __init__(self, answers: list[str], texts: list[bytes]) -> None:
        self.answers, self.texts = answers, texts

    def a(self, name: str) -> list[str]:
        return self.answers

    def txt(self, name: str) -> list[bytes]:
        return self.texts


BLOCKLIST_ANSWERS = [
    (["127.0.0.2"], [b"\r\n550 5.7.1 injected\x00", b"\xff\xfe" * 400]),
    (["127.0.0.2"], [("%s %n \u2028 " * 300).encode()]),
    (["127.255.255.254", "127.255.255.255"], []),
    (["0.0.0.0", "255.255.255.255", "10.0.0.1"], [b"x"]),
    ([f"127.0.0.{i}" for i in range(1, 255)], [b"many"] * 50),
]


@pytest.mark.parametrize(("answers", "texts"), BLOCKLIST_ANSWERS)
@pytest.mark.parametrize("client", ["ipv4", "ipv6", "8-bit PTR"])
@pytest.mark.parametrize("value", [None, AccessValue(AccessKind.QUARANTINE)])
def test_hostile_blocklist_answers(caplog: pytest.LogCaptureFixture, answers: list[str],
                                   texts: list[bytes], client: str,
                                   value: AccessValue | None) -> None:
    lists = Blocklists(DnsblSettings(parse_zones("bl.example"), parse_zones("rhs.example")),
                       HostileBlocklistDns(answers, texts))
    access = FakeAccess({} if value is None else {("DNSBL", "bl.example"): value,
                                                  ("RHSBL", "rhs.example"): value})
    s = SmtpSession(SETTINGS, Services(access, FakeStore(), FakeClock(), dnsbl=lists))
    hostname, family, hostaddr = CONNECTS[client]
    run(caplog, s, hostname=hostname, family=family, hostaddr=hostaddr, helo=CONTROL_HELO,
        sender="<u@x.example>", rcpts=("<bob@example.com>",),
        headers=(("From", f"a@{EIGHT_BIT_HELO}"), ("Subject", "x")))


# --- ARC: hostile ARC header fields ------------------------------------------------------

ARC_HEADER_SETS = [
    (("ARC-Seal", "i=1; cv=none; a=rsa-sha256; d=x.example; s=s; b=AAAA"),),
    (("ARC-Seal", "i=1"), ("ARC-Message-Signature", "i=1"),
     ("ARC-Authentication-Results", "i=1")),
    (("ARC-Seal", "i=999999999999999999999; cv=pass"), ("ARC-Seal", "i=0")),
    (("ARC-Seal", f"i=1; d={CONTROL_HELO}; b=\x00\xff"),
     ("ARC-Message-Signature", "i=1; h=from:arc-seal; d=x; s=y; bh=; b="),
     ("ARC-Authentication-Results", f"i=1; {LONG_HELO}")),
    tuple(("ARC-Seal", f"i={i}; cv=pass; d=x.example; s=s; b=") for i in range(1, 60)),
    (("ARC-Message-Signature", EIGHT_BIT_HELO), ("ARC-Authentication-Results", "")),
]


@pytest.mark.parametrize("arc_headers", ARC_HEADER_SETS, ids=range(len(ARC_HEADER_SETS)))
@pytest.mark.parametrize("seal", [False, True])
def test_hostile_arc_headers(caplog: pytest.LogCaptureFixture,
                             arc_headers: tuple[tuple[str, str], ...], seal: bool) -> None:
    """ARC verification (and our sealing) over hostile ARC fields: a defined
    arc= result, a safe A-R header, clean logs."""
    resolver = zone()
    fake_access = FakeAccess({})
    settings = SETTINGS
    if seal:  # a key dkimpy refuses: sealing is logged and skipped, never an error
        settings = PolicySettings(connection=SETTINGS.connection, checks=CHECKS,
                                  arc=ArcSettings(b"not a key", "example.com"))
    s = SmtpSession(settings, Services(fake_access, FakeStore(), FakeClock(),
                                       resolver=resolver, dmarc=DmarcCheck(resolver)))
    hostname, family, hostaddr = CONNECTS["ipv4"]
    run(caplog, s, hostname=hostname, family=family, hostaddr=hostaddr, helo="helo.example",
        sender="<u@pass.example>", rcpts=("<bob@example.com>",),
        headers=(*arc_headers, ("From", "a@pass.example"), ("Subject", "arc")))
    assert any(m.startswith(("ARC: fail", "ARC: none")) for m in caplog.messages)
