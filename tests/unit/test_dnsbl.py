"""DNS blocklists: zone parsing, lookups (answer codes, error codes,
timeouts, TXT), the access-file verdict and the pipeline (delayed reject at
DATA, quarantine, skips for internal, trusted, authenticated and
whitelisted clients), with a fake resolver."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fakes import FakeAccess, FakeClock, FakeStore

from bmslib.interfaces import DnsTempError
from bmslib.policy.connection import ConnectionSettings, IpList
from bmslib.policy.decision import CONTINUE, AccessKind, AccessValue, Action, Decision
from bmslib.policy.dnsbl import Blocklists, DnsblSettings, parse_zones, reverse_ip
from bmslib.policy.edits import EomResult
from bmslib.policy.pipeline import PolicySettings, Services, SmtpSession, SpfResult

CLIENT = "198.51.100.9"


class Dns:
    def __init__(self, a: dict[str, list[str]], txt: dict[str, list[bytes]] | None = None,
                 broken: tuple[str, ...] = ()) -> None:
        self.answers, self.texts, self.broken = a, txt or {}, broken
        self.asked: list[str] = []

    def a(self, name: str) -> list[str]:
        self.asked.append(name)
        if name in self.broken:
            raise DnsTempError(name)
        return self.answers.get(name, [])

    def txt(self, name: str) -> list[bytes]:
        return self.texts.get(name, [])


LISTED = {
    "9.100.51.198.bl.test": ["127.0.0.2"],
    "9.100.51.198.codes.test": ["127.0.0.3"],
    "9.100.51.198.err.test": ["127.255.255.254"],
    "9.100.51.198.odd.test": ["192.0.2.1"],
    "spammer.test.rhs.test": ["127.0.0.2"],
}
TXT = {"9.100.51.198.bl.test": [b"Listed: see https://bl.test/q?198.51.100.9\r\n\x00%s"]}


def lists(ip_zones: str = "bl.test", rhs: str = "rhs.test", **kw: tuple[str, ...]
          ) -> Blocklists:
    return Blocklists(DnsblSettings(parse_zones(ip_zones), parse_zones(rhs)),
                      Dns(LISTED, TXT, **kw))


def test_zone_words_and_reverse_names() -> None:
    assert [z.name for z in parse_zones("A.test, b.test=127.0.0.2,127.0.0.4 c.test")] == [
        "a.test", "b.test", "c.test"]
    assert parse_zones("b.test=127.0.0.2,127.0.0.4")[0].codes == {"127.0.0.2", "127.0.0.4"}
    for bad in ("a.test=", "a.test=127.0.0.x", "-x.test", "a"):
        with pytest.raises(ValueError):
            parse_zones(bad)
    assert reverse_ip("192.0.2.1") == "1.2.0.192"
    assert reverse_ip("::ffff:192.0.2.1") == "1.2.0.192"
    assert reverse_ip("2001:db8::1") == "1.0.0.0." + "0.0.0.0." * 5 + "8.b.d.0.1.0.0.2"
    assert reverse_ip("nonsense") is None


def test_listing_codes_error_answers_and_timeouts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    found = lists().check_ip(CLIENT)
    assert found is not None and (found.zone, found.code) == ("bl.test", "127.0.0.2")
    assert "\r" not in found.txt and "\x00" not in found.txt and "Listed: see" in found.txt
    assert lists("codes.test=127.0.0.2").check_ip(CLIENT) is None
    assert lists("codes.test=127.0.0.2,127.0.0.3").check_ip(CLIENT) is not None
    assert lists("err.test odd.test").check_ip(CLIENT) is None
    assert sum("an error code, ignored" in m for m in caplog.messages) == 2
    assert lists(broken=("9.100.51.198.bl.test",)).check_ip(CLIENT) is None
    assert "DNSBL: bl.test: no answer for 198.51.100.9: ignored" in caplog.messages
    assert lists().check_ip("192.0.2.200") is None
    assert lists().check_domain("Spammer.test.", "HELO") is not None
    assert lists().check_domain("[192.0.2.1]", "HELO") is None
    assert lists().check_domain("192.0.2.1", "HELO") is None


def session(*, access: dict[tuple[str, str], AccessValue] | None = None,
            dry_run: bool = False, rhs: str = "rhs.test") -> SmtpSession:
    settings = PolicySettings(connection=ConnectionSettings(
        internal_connect=IpList(["10.0.0.0/8"]), trusted_relay=IpList(["203.0.113.25"])),
        dry_run=dry_run)
    return SmtpSession(settings, Services(FakeAccess(access or {}), FakeStore(), FakeClock(),
                                          dnsbl=lists(rhs=rhs)))


def transaction(s: SmtpSession, ip: str = CLIENT, helo: str = "mail.other.test",
                sender: str = "<a@other.test>", from_: str = "a@other.test",
                auth: str | None = None) -> Iterator[Decision | EomResult]:
    yield s.connect("mail.other.test", socket.AF_INET, (ip, 4000),
                    lambda n: "mx.example.com" if n == "j" else None)
    yield s.helo(helo)
    yield s.mail(sender, [], lambda n: auth if n == "{auth_authen}" else None)
    yield s.rcpt("<bob@example.com>", [])
    yield s.data()
    s.header("From", from_)
    yield s.eoh()
    s.body(b"Hi.\r\n")
    yield s.eom(lambda n: None)


def answers(s: SmtpSession, **kw: Any) -> list[Decision | EomResult]:
    out: list[Decision | EomResult] = []
    for r in transaction(s, **kw):
        out.append(r)
        if isinstance(r, Decision) and r.final:
            break
    return out


def test_listed_client_is_refused_at_data_with_zone_and_txt(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    out = answers(session())
    assert [isinstance(r, Decision) and r.final for r in out] == [False] * 4 + [True]
    d = out[-1]
    assert isinstance(d, Decision) and d.action is Action.REJECT and d.code == "550"
    assert d.lines[0] == "198.51.100.9 is listed in bl.test."
    assert d.lines[1].startswith("Listed: see https://bl.test/q?198.51.100.9")
    assert any(m.startswith("DNSBL: DNSBL client 198.51.100.9 listed in bl.test (127.0.0.2)")
               for m in caplog.messages)
    assert "REJECT: DNSBL client 198.51.100.9 listed in bl.test (127.0.0.2)" in caplog.messages


@pytest.mark.parametrize(("kind", "action", "quarantine"), [
    (AccessKind.OK, Action.CONTINUE, False),
    (AccessKind.QUARANTINE, Action.CONTINUE, True),
    (AccessKind.TEMPFAIL, Action.TEMPFAIL, False),
    (AccessKind.ERROR, Action.REJECT, False),
])
def test_access_file_verdicts_per_zone(kind: AccessKind, action: Action,
                                       quarantine: bool) -> None:
    value = AccessValue(kind, "550", "5.7.1", "Not here") if kind is AccessKind.ERROR \
        else AccessValue(kind)
    out = answers(session(access={("DNSBL", "bl.test"): value}))
    last = out[-1]
    if action is Action.CONTINUE:
        assert isinstance(last, EomResult) and not last.decision.final
        assert last.quarantine.startswith("DNSBL client") is quarantine
    else:
        assert isinstance(last, Decision) and last.action is action
        assert len(out) == 5  # at DATA


@pytest.mark.parametrize(("ip", "auth"), [("10.1.2.3", None), ("203.0.113.25", None),
                                          (CLIENT, "alice")])
def test_internal_trusted_and_authenticated_clients_are_not_looked_up(
        ip: str, auth: str | None) -> None:
    s = session()
    out = answers(s, ip=ip, auth=auth, sender="<a@example.com>")
    assert not any(isinstance(r, Decision) and r.final for r in out)
    assert s.services.dnsbl is not None
    assert s.services.dnsbl.resolver.asked == []  # type: ignore[attr-defined]


def test_whitelisted_sender_is_not_looked_up() -> None:
    """An access-file WHITELIST for the sender (through the SPF step)."""
    dns = lists()
    s = SmtpSession(PolicySettings(), Services(
        FakeAccess({}), FakeStore(), FakeClock(), dnsbl=dns,
        spf=lambda conn, helo, sender: SpfResult(CONTINUE, whitelist=True, result="pass")))
    out = answers(s)
    assert isinstance(out[-1], EomResult) and not out[-1].decision.final
    assert dns.resolver.asked == []  # type: ignore[attr-defined]


@pytest.mark.parametrize(("where", "kw"), [
    ("HELO", {"helo": "spammer.test"}),
    ("MAIL FROM", {"sender": "<x@spammer.test>"}),
    ("From:", {"from_": "Spam <x@spammer.test>"}),
])
def test_rhsbl_for_helo_mail_from_and_from(where: str, kw: dict[str, str],
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    s = SmtpSession(PolicySettings(), Services(FakeAccess({}), FakeStore(), FakeClock(),
                                               dnsbl=lists("", "rhs.test")))
    out = answers(s, **kw)
    d = out[-1]
    assert isinstance(d, Decision) and d.action is Action.REJECT
    assert d.lines == ("spammer.test is listed in rhs.test.",)
    assert len(out) == (6 if where == "From:" else 5)  # at end of headers, else DATA
    assert f"REJECT: RHSBL {where} spammer.test listed in rhs.test (127.0.0.2)" \
        in caplog.messages


def test_dry_run_logs_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    out = answers(session(dry_run=True))
    assert isinstance(out[-1], EomResult) and not out[-1].decision.final
    assert "DRYRUN REJECT: DNSBL client 198.51.100.9 listed in bl.test (127.0.0.2)" \
        in caplog.messages
    out = answers(session(dry_run=True, access={
        ("DNSBL", "bl.test"): AccessValue(AccessKind.QUARANTINE)}))
    assert isinstance(out[-1], EomResult) and out[-1].quarantine == ""
    assert any(m.startswith("DRYRUN QUARANTINE: DNSBL client") for m in caplog.messages)
