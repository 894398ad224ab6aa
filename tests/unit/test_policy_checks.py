"""Connection classes, connect/HELO/MAIL/RCPT checks and demerits, with fakes."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from fakes import FakeAccess, FakeClock, FakeResolver, FakeStore

from bmslib.policy.address import parse_address
from bmslib.policy.checks import (
    CheckSettings,
    check_banned_ip,
    check_helo,
    check_internal_mta,
    check_missing_helo,
    check_ptr,
    check_recipient,
    check_smtp_auth,
    check_zombie,
)
from bmslib.policy.connection import Connection, ConnectionSettings, IpList, classify, parse_ip
from bmslib.policy.decision import AccessKind, AccessValue, Action
from bmslib.policy.reputation import Demerits, ReputationSettings


def conn(ip: str | None = "198.51.100.7", *, internal: bool = False, trusted: bool = False,
         local: bool = False, hostname: str = "mail.example.net", port: str | None = None
         ) -> Connection:
    return Connection(hostname, ip, 4000, internal, trusted, local, False, "mx.example.test", port)


# --- connection classes ---------------------------------------------------------------

@pytest.mark.parametrize(("item", "ip", "expected"), [
    ("192.168.0.0/16", "192.168.3.4", True),
    ("192.168.0.0/16", "192.169.0.1", False),
    ("127.*", "127.0.0.5", True),
    ("127.*", "10.0.0.1", False),
    ("2001:db8::/32", "2001:db8:1::5", True),
    ("2001:db8::/32", "2001:db9::5", False),
    ("192.0.2.5", "192.0.2.5", True),
    ("192.0.2.5", "::ffff:192.0.2.5", True),  # v4-mapped counts as IPv4
    ("10.0.0.0/8", "2001:db8::1", False),
])
def test_iplist_networks_and_globs(item: str, ip: str, expected: bool) -> None:
    assert IpList([item]).matches(parse_ip(ip)) is expected


def test_iplist_host_names_resolve_through_the_resolver() -> None:
    resolver = FakeResolver({"relay.example.com": ["192.0.2.10", "2001:db8::10"]})
    lst = IpList(["relay.example.com", "office.example.com/24"])
    resolver.hosts["office.example.com"] = ["198.51.100.1"]
    assert lst.matches(parse_ip("192.0.2.10"), resolver)
    assert lst.matches(parse_ip("2001:db8::10"), resolver)
    assert lst.matches(parse_ip("198.51.100.200"), resolver)  # /24 around the name
    assert not lst.matches(parse_ip("192.0.2.11"), resolver)


def test_iplist_dns_trouble_is_no_match_not_a_crash() -> None:
    resolver = FakeResolver({}, broken=frozenset({"relay.example.com"}))
    assert not IpList(["relay.example.com"]).matches(parse_ip("192.0.2.10"), resolver)


def test_iplist_rejects_garbage_at_load() -> None:
    with pytest.raises(ValueError, match="neither"):
        IpList(["host/abc"])


@pytest.mark.parametrize(("hostname", "family", "hostaddr", "want"), [
    ("mx.example.net", socket.AF_INET, ("192.168.1.5", 4000), ("INTERNAL", False, False)),
    ("[203.0.113.9]", socket.AF_INET, ("203.0.113.9", 25), ("EXTERNAL DYN", False, True)),
    ("unknown", socket.AF_INET, ("203.0.113.9", 25), ("EXTERNAL DYN", False, True)),
    ("pool-1-2.dsl.example", socket.AF_INET, ("203.0.113.9", 25), ("EXTERNAL DYN", False, True)),
    ("mx.example.net", socket.AF_INET6, ("2001:db8::5", 25, 0, 0), ("EXTERNAL TRUSTED", False,
                                                                     False)),
    ("localhost", socket.AF_INET, ("127.0.0.1", 1), ("EXTERNAL", True, False)),
    ("localhost", socket.AF_UNIX, "/var/run/x", ("EXTERNAL", True, False)),
    ("localhost", 0, None, ("EXTERNAL", True, False)),
])
def test_classify(hostname: str, family: int, hostaddr: Any,
                  want: tuple[str, bool, bool]) -> None:
    settings = ConnectionSettings(IpList(["192.168.0.0/16"]), IpList(["2001:db8::/32"]))
    c = classify(settings, hostname, family, hostaddr, "mx.example.test", None,
                 is_dynamic=lambda name, ip: "dsl" in name)
    assert (c.describe(), c.local, c.dyn) == want
    if family in (socket.AF_INET, socket.AF_INET6):
        assert c.ip == hostaddr[0] and c.port == hostaddr[1]
    if hostname in ("unknown",):
        assert c.hostname == "[203.0.113.9]" and c.ptr_missing


# --- connect and HELO -------------------------------------------------------------------

def test_banned_ip_is_a_delayed_reject_except_on_submission() -> None:
    d = check_banned_ip(conn(), banned=True)
    assert d.action is Action.REJECT and d.delay and d.code == "550" and "198.51.100.7" in d.log
    assert not check_banned_ip(conn(port="587"), banned=True).final
    assert not check_banned_ip(conn(), banned=False).final


@pytest.mark.parametrize(("hostname", "local", "rejected"), [
    ("localhost", False, True), ("LOCALHOST.", False, True), (".", False, True),
    ("localhost", True, False), ("mail.example.net", False, False), ("[1.2.3.4]", False, False),
])
def test_absurd_ptr(hostname: str, local: bool, rejected: bool) -> None:
    d = check_ptr(conn(hostname=hostname, local=local))
    assert d.final is rejected
    if rejected:
        assert d.delay and hostname in d.lines[0]


@pytest.mark.parametrize(("helo", "internal", "tag"), [
    ("192.0.2.1", False, "numeric hello name"),
    ("[192.0.2.1]", False, "numeric hello name"),
    ("[IPv6:2001:db8::1]", False, "numeric hello name"),
    ("192.0.2.1", True, ""),  # internal copiers may
    ("MX.Example.Test", False, "spam from self"),  # our own name, any case
    ("mx.example.test.", False, "spam from self"),
    ("client.example.net", False, ""),
    ("caf\udce9.example", False, ""),  # 8-bit HELO: no crash, no reject here
    ("", False, ""),
])
def test_helo(helo: str, internal: bool, tag: str) -> None:
    settings = CheckSettings(hello_blacklist=frozenset({"mx.example.test"}))
    d = check_helo(conn(internal=internal), settings, helo)
    assert d.tag == tag and d.final is bool(tag)
    if tag:
        assert (d.code, d.xcode) == ("550", "5.7.1") and not d.delay


def test_missing_helo() -> None:
    assert check_missing_helo(None).tag == "missing HELO"
    assert not check_missing_helo("client.example").final


# --- MAIL FROM --------------------------------------------------------------------------

ZOMBIE = CheckSettings(internal_domains=("example.com", "*.example.com"))


@pytest.mark.parametrize(("sender", "kw", "rejected"), [
    ("<debby@fedex.com>", {"internal": True}, True),
    ("<joe@example.com>", {"internal": True}, False),
    ("<joe@Sales.Example.COM>", {"internal": True}, False),  # case-insensitive globs
    ("<>", {"internal": True}, False),
    ("<postmaster>", {"internal": True}, False),  # unqualified: no domain to judge
    ('<"john doe"@fedex.com>', {"internal": True}, True),
    ("<x@[192.0.2.1]>", {"internal": True}, True),
    ("<debby@fedex.com>", {"internal": True, "trusted": True}, False),
    ("<debby@fedex.com>", {"internal": True, "local": True}, False),
])
def test_zombie(sender: str, kw: dict[str, Any], rejected: bool) -> None:
    c = conn("192.168.100.171", **kw)
    d = check_zombie(c, ZOMBIE, parse_address(sender))
    assert d.final is rejected
    if rejected:
        addr = parse_address(sender)
        assert d.log == f"zombie PC at 192.168.100.171 sending MAIL FROM {addr}"
        assert (d.code, d.xcode, d.delay) == ("550", "5.7.1", False)


def test_zombie_check_off_without_internal_domains() -> None:
    assert not check_zombie(conn(internal=True), CheckSettings(),
                            parse_address("<a@b.c>")).final


def test_internal_mta_only_listed_hosts_send_bounces() -> None:
    settings = CheckSettings(internal_mta=IpList(["192.168.1.25"]))
    null = parse_address("<>")
    assert check_internal_mta(conn("192.168.1.77", internal=True), settings, null).tag \
        == "pretend MTA"
    assert not check_internal_mta(conn("192.168.1.25", internal=True), settings, null).final
    assert not check_internal_mta(conn("192.168.1.77", internal=True), settings,
                                  parse_address("<a@b>")).final
    assert not check_internal_mta(conn("192.168.1.77", internal=True), CheckSettings(),
                                  null).final


@pytest.mark.parametrize(("value", "action", "policy"), [
    (None, Action.CONTINUE, None),
    (AccessValue(AccessKind.OK), Action.CONTINUE, AccessKind.OK),
    (AccessValue(AccessKind.WHITELIST), Action.CONTINUE, AccessKind.WHITELIST),
    (AccessValue(AccessKind.REJECT), Action.REJECT, AccessKind.REJECT),
    (AccessValue(AccessKind.CBV), Action.REJECT, AccessKind.CBV),
    (AccessValue(AccessKind.ERROR, "451", "4.7.0", "try later"), Action.TEMPFAIL,
     AccessKind.ERROR),
])
def test_smtp_auth(value: AccessValue | None, action: Action, policy: AccessKind | None) -> None:
    access = FakeAccess({("SMTP-Auth", "good@example.com"): value} if value else {})
    r = check_smtp_auth(conn(internal=True), access, "good", parse_address("<x@example.com>"))
    assert r.decision.action is action and r.policy is policy
    assert access.asked == [("SMTP-Auth", "good@example.com")]
    if action is Action.TEMPFAIL:
        assert (r.decision.code, r.decision.xcode, r.decision.lines) == ("451", "4.7.0",
                                                                          ("try later",))


def test_smtp_auth_unqualified_sender_is_checked_as_our_name() -> None:
    access = FakeAccess({})
    check_smtp_auth(conn(), access, "bad", parse_address("<good>"))
    assert access.asked == [("SMTP-Auth", "bad@mx.example.test")]


# --- RCPT TO ------------------------------------------------------------------------------

RCPT = CheckSettings(private_relay=frozenset({"partner.example"}),
                     check_user={"example.com": frozenset({"alice", "bob"})})


@pytest.mark.parametrize(("rcpt", "kw", "tag"), [
    ("<MAILER-DAEMON@example.com>", {}, "robot recipient"),
    ("<x@partner.example>", {}, "RELAY"),
    ("<x@partner.example>", {"internal": True}, ""),
    ("<Alice@example.com>", {}, ""),
    ("<mallory@example.com>", {}, "unknown user"),
    ("<anyone@other.example>", {}, ""),
    ("<unqualified>", {}, ""),
])
def test_recipients(rcpt: str, kw: dict[str, Any], tag: str) -> None:
    d = check_recipient(conn(**kw), RCPT, parse_address(rcpt))
    assert d.tag == tag and d.final is bool(tag) and not d.delay


# --- demerits -----------------------------------------------------------------------------

def test_demerits_ban_once_over_the_limit() -> None:
    store = FakeStore()
    d = Demerits(ReputationSettings(max_demerits=3, ban_days=2), store, FakeClock(), conn())
    assert not d.add(2, "HELO after MAIL")
    assert not d.add(1, "unknown user")  # 3 is not over 3
    assert d.add(4, "hello blacklist")
    assert not d.add(4, "again")  # banned once per connection
    assert store.bans == [("198.51.100.7", 1000.0 + 2 * 86400, "hello blacklist")]


@pytest.mark.parametrize("kw", [{"trusted": True}, {"internal": True}, {"local": True}])
def test_demerits_never_ban_trusted_internal_or_local(kw: dict[str, Any]) -> None:
    store = FakeStore()
    d = Demerits(ReputationSettings(max_demerits=0), store, FakeClock(), conn(**kw))
    assert not d.add(10, "x") and store.bans == []


def test_demerits_unset_limit_never_bans() -> None:
    store = FakeStore()
    d = Demerits(ReputationSettings(max_demerits=None), store, FakeClock(), conn())
    assert not d.add(1000, "x") and store.bans == []
