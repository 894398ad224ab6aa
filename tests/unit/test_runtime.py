"""``bmslib.runtime``: the policy objects built from a loaded configuration
(the shipped sample, the original's, and one option at a time), with a
zone-table resolver and a transport that must not be used; every failure is
a one-line :class:`RuntimeBuildError` naming what is at fault."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeAccess, FakeClock, FakeStore

from bmslib.access import AccessFile
from bmslib.config import Config, load_config
from bmslib.policy.cbv import CallbackVerifier
from bmslib.policy.decision import Action
from bmslib.policy.greylist import GreylistSettings
from bmslib.policy.pipeline import PolicySettings, Services, SmtpSession
from bmslib.policy.spf import SpfPolicy, SpfSettings
from bmslib.runtime import (
    NoAccess,
    Runtime,
    RuntimeBuildError,
    build_runtime,
    describe,
    dns_settings,
    domains_or_all,
    maintain_store,
    open_access,
    open_store,
    policy_settings,
    spf_settings,
    system_nameservers,
)
from bmslib.smtpclient import SmtpOutcome
from bmslib.state.sqlite import SqliteStore

from .spf_fakes import CLIENT, zone

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "pymilter.cfg"
ORIGINAL = ROOT / "tests" / "data" / "original-pymilter.cfg"


class NoTransport:
    """An SmtpTransport that fails the test when the runtime talks SMTP."""

    def probe(self, ip: str, *, helo: str, recipient: str, timeout: float) -> SmtpOutcome:
        raise AssertionError(f"unexpected SMTP probe to {ip}")

    def deliver(self, ip: str, *, helo: str, recipient: str, message: bytes,
                timeout: float) -> SmtpOutcome:
        raise AssertionError(f"unexpected SMTP delivery to {ip}")


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def config_of(tmp_path: Path, text: str, *, datadir: bool = True,
              access: str | None = "") -> Config:
    """A config from ``text``; datadir is ``tmp_path`` and the access file is
    empty (no file) unless the text says otherwise."""
    head = ""
    if datadir and "datadir" not in text:
        head += f"[milter]\ndatadir = {tmp_path}\n"
    if access is not None and "access_file" not in text:
        head += f"[spf]\naccess_file = {access}\n"
    return load_config([write(tmp_path / "base.cfg", head),
                        write(tmp_path / "test.cfg", text)])


def build(config: Config, tmp_path: Path, **kw: Any) -> Runtime:
    kw.setdefault("resolver", zone())
    kw.setdefault("transport", NoTransport())
    kw.setdefault("hostname", "mx.runtime.test")
    return build_runtime(config, **kw)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def NO_MACROS(name: str) -> str | None:
    return None


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text, text
    return text


# --- the shipped sample and the original's ------------------------------------------


def test_shipped_sample_builds_a_working_runtime(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)  # access_file = access, datadir = local/lib: relative
    cfg = load_config([str(SHIPPED)])
    store = SqliteStore(tmp_path / "state.sqlite")
    resolver = zone()
    transport = NoTransport()
    rt = build_runtime(cfg, store=store, resolver=resolver, transport=transport,
                       hostname="mx.runtime.test")
    assert rt.config is cfg and rt.store is store
    assert isinstance(rt.access, AccessFile) and rt.access.path == os.path.abspath("access")
    assert rt.services.access is rt.access and rt.services.store is store
    assert rt.services.resolver is resolver
    assert rt.services.reports is rt.reports and rt.reports.store is store
    assert build_runtime(cfg, store=store, reports=rt.reports, resolver=resolver,
                         transport=transport).reports is rt.reports  # kept across reloads
    assert isinstance(rt.services.spf, SpfPolicy)
    assert rt.services.spf.settings == SpfSettings()  # every [spf] option at its default
    assert rt.services.spf.resolver is resolver and rt.services.spf.access is rt.access
    assert isinstance(rt.services.cbv, CallbackVerifier)
    assert rt.services.cbv.transport is transport
    assert rt.services.cbv.settings.hostname == "mx.runtime.test"
    assert rt.services.cbv.settings.timeout == 20.0
    assert rt.services.cbv.settings.datadir == "local/lib"
    assert rt.services.is_dynamic is not None
    assert rt.services.is_dynamic("dsl-192-0-2-1.pool.example.net", "192.0.2.1")

    s = rt.settings
    assert s.connection.internal_connect.items == ("127.*", "::1", "192.168.0.0/16")
    assert s.connection.internal_connect.matches(ip("192.168.4.4"))
    assert s.connection.internal_connect.matches(ip("::1"))
    assert not s.connection.internal_connect.matches(ip("192.0.2.1"))
    assert not s.connection.trusted_relay
    assert s.checks.internal_domains == () and not s.checks.internal_mta
    assert s.checks.hello_blacklist == frozenset() and s.checks.private_relay == frozenset()
    assert s.checks.check_user == {}
    assert (s.reputation.max_demerits, s.reputation.ban_days) == (None, 7.0)
    assert (s.dry_run, s.log_headers) == (False, False)
    assert describe(rt) == {"config": str(SHIPPED), "access": str(ROOT / "access"),
                            "state": str(tmp_path / "state.sqlite"), "greylist": "off",
                            "srs": "off", "dkim signing": "off", "dry_run": "no"}

    # The pieces are wired together: an outside client passing SPF gets our headers.
    session = rt.session()
    assert isinstance(session, SmtpSession) and session.settings is rt.settings
    mac: Callable[[str], str | None] = {"j": "mx.runtime.test", "i": "Q1"}.get
    assert not session.connect("client.pass.example", socket.AF_INET, (CLIENT, 2525), mac).final
    assert not session.helo("helo.example").final
    assert not session.mail("<a@pass.example>", (), mac).final
    assert not session.rcpt("<b@example.com>", ()).final
    assert not session.data().final
    result = session.eom(mac)
    assert not result.decision.final
    inserted = {e.name: e.value for e in result.edits if e.op == "insert"}
    assert inserted["Received-SPF"].startswith("Pass ")
    assert "receiver=mx.runtime.test" in inserted["Received-SPF"]
    assert "spf=pass smtp.mailfrom=a@pass.example" in inserted["Authentication-Results"]


def test_original_config_maps_onto_the_policy(tmp_path: Path) -> None:
    cfg = load_config([str(ORIGINAL)])
    s = policy_settings(cfg)
    assert s.connection.internal_connect.items == ("192.168.0.0/16", "127.*")
    assert s.connection.trusted_relay.matches(ip("66.12.34.56"))
    assert s.connection.trusted_relay.matches(ip("1.2.3.4"))
    assert not s.connection.trusted_relay.matches(ip("1.2.3.5"))
    assert s.checks.internal_domains == ("mycorp.com", "localhost.localdomain")
    assert s.checks.hello_blacklist == frozenset({"mycorp.com", "66.12.34.56"})
    assert s.reputation.max_demerits == 3
    assert (s.dry_run, s.log_headers) == (False, False)
    assert spf_settings(cfg) == SpfSettings(
        reject_neutral=("aol.com",), accept_softfail=("bounces.amazon.com",),
        accept_fail=("custhelp.com",), trusted_forwarder=("careerbuilder.com",))


def test_original_config_names_the_missing_access_file(tmp_path: Path) -> None:
    """``access_file = /etc/mail/access.db`` with neither file: the text file is named."""
    missing = tmp_path / "etc" / "access.db"
    override = write(tmp_path / "local.cfg",
                     f"[milter]\ndatadir = {tmp_path}\n[spf]\naccess_file = {missing}\n")
    cfg = load_config([str(ORIGINAL), override])
    with pytest.raises(RuntimeBuildError) as info:
        build(cfg, tmp_path)
    text = one_line(info.value)
    assert text.startswith(f"{override}: [spf] access_file: ")
    assert str(tmp_path / "etc" / "access") in text and "cannot read" in text


def test_original_config_builds_with_an_access_file_and_its_own_store(tmp_path: Path) -> None:
    access = write(tmp_path / "access", "SPF-Neutral:aol.com REJECT\n")
    override = write(tmp_path / "local.cfg",
                     f"[milter]\ndatadir = {tmp_path}\n[spf]\naccess_file = {access}.db\n")
    rt = build(load_config([str(ORIGINAL), override]), tmp_path)
    assert isinstance(rt.access, AccessFile) and rt.access.path == access
    lookup = rt.access.lookup("SPF-Neutral", "x@mail.aol.com")
    assert lookup is not None and lookup.kind.value == "REJECT"
    assert rt.store.path == str(tmp_path / "bms.sqlite")
    assert (tmp_path / "bms.sqlite").is_file()
    assert rt.settings.reputation.max_demerits == 3


# --- policy_settings: every [milter] option ------------------------------------------

def _check_user(s: PolicySettings) -> object:
    return dict(s.checks.check_user)


MILTER_OPTIONS: list[tuple[str, Callable[[PolicySettings], object], object]] = [
    ("internal_connect = 10.0.0.0/8, 2001:db8::/32, 172.16.*",
     lambda s: (s.connection.internal_connect.matches(ip("10.1.2.3")),
                s.connection.internal_connect.matches(ip("2001:db8::5")),
                s.connection.internal_connect.matches(ip("172.16.9.9")),
                s.connection.internal_connect.matches(ip("11.0.0.1"))),
     (True, True, True, False)),
    ("trusted_relay = 192.0.2.25 2001:db8::25",
     lambda s: (s.connection.trusted_relay.matches(ip("192.0.2.25")),
                s.connection.trusted_relay.matches(ip("2001:db8::25")),
                s.connection.trusted_relay.matches(ip("192.0.2.26"))),
     (True, True, False)),
    ("internal_domains = Example.COM, *.Example.net",
     lambda s: s.checks.internal_domains, ("example.com", "*.example.net")),
    ("internal_mta = 192.168.1.2",
     lambda s: (s.checks.internal_mta.matches(ip("192.168.1.2")),
                s.checks.internal_mta.matches(ip("192.168.1.3"))),
     (True, False)),
    ("hello_blacklist = Mail.Example.COM, 192.0.2.1",
     lambda s: s.checks.hello_blacklist, frozenset({"mail.example.com", "192.0.2.1"})),
    ("private_relay = AOL.com yahoo.com",
     lambda s: s.checks.private_relay, frozenset({"aol.com", "yahoo.com"})),
    ("check_user = Joe@Example.COM, mary@example.com, bob@other.example",
     _check_user, {"example.com": frozenset({"joe", "mary"}),
                   "other.example": frozenset({"bob"})}),
    ("max_demerits = 3", lambda s: s.reputation.max_demerits, 3),
    ("max_demerits = 0", lambda s: s.reputation.max_demerits, 0),
    ("max_demerits =", lambda s: s.reputation.max_demerits, None),
    ("ban_days = 2.5", lambda s: s.reputation.ban_days, 2.5),
    ("ban_days = 1", lambda s: s.reputation.ban_days, 1.0),
    ("dry_run = yes", lambda s: s.dry_run, True),
    ("dry_run = 0", lambda s: s.dry_run, False),
    ("log_headers = on", lambda s: s.log_headers, True),
    ("log_headers = false", lambda s: s.log_headers, False),
]


@pytest.mark.parametrize(("line", "get", "expected"), MILTER_OPTIONS,
                         ids=[row[0] for row in MILTER_OPTIONS])
def test_policy_settings_maps_each_milter_option(
        tmp_path: Path, line: str, get: Callable[[PolicySettings], object],
        expected: object) -> None:
    cfg = config_of(tmp_path, f"[milter]\n{line}\n")
    assert get(policy_settings(cfg)) == expected
    # The same settings reach the runtime (and so every session it makes).
    rt = build(cfg, tmp_path, store=SqliteStore(tmp_path / "s.sqlite"))
    assert get(rt.settings) == expected
    assert rt.session().settings == rt.settings


def test_check_user_file_entries_read_from_datadir(tmp_path: Path) -> None:
    (tmp_path / "example.org").write_text("Joe  mary\n\tBOB\n", encoding="utf-8")
    other = tmp_path / "abs"
    other.mkdir()
    (other / "abs.example").write_text("ann\n", encoding="utf-8")
    cfg = config_of(tmp_path, "[milter]\ncheck_user = file:example.org, "
                              f"file:{other}/abs.example, zed@example.org\n")
    assert dict(policy_settings(cfg).checks.check_user) == {
        "example.org": frozenset({"joe", "mary", "bob", "zed"}),
        "abs.example": frozenset({"ann"})}


def test_check_user_is_enforced_at_rcpt_by_the_built_session(tmp_path: Path) -> None:
    (tmp_path / "example.org").write_text("joe\n", encoding="utf-8")
    cfg = config_of(tmp_path, "[milter]\ncheck_user = file:example.org\n")
    s = SmtpSession(policy_settings(cfg),
                    Services(FakeAccess({}), FakeStore(), FakeClock()))
    s.connect("client.example.net", socket.AF_INET, ("198.51.100.1", 25), {"j": "mx"}.get)
    s.helo("client.example.net")
    s.mail("<a@client.example.net>", (), NO_MACROS)
    assert not s.rcpt("<Joe@Example.ORG>", ()).final
    d = s.rcpt("<jim@example.org>", ())
    assert (d.action, d.code, d.xcode, d.tag) == (Action.REJECT, "550", "5.1.1", "unknown user")
    assert not s.rcpt("<jim@example.com>", ()).final  # a domain that is not listed


@pytest.mark.parametrize(("value", "needle"), [
    ("file:nowhere.example", "cannot read"),
    ("justaname", "expected user@domain or file:PATH"),
])
def test_bad_check_user_entries_are_one_line_errors(tmp_path: Path, value: str,
                                                    needle: str) -> None:
    cfg = config_of(tmp_path, f"[milter]\ncheck_user = {value}\n")
    for call in (lambda: policy_settings(cfg), lambda: build(cfg, tmp_path)):
        with pytest.raises(RuntimeBuildError) as info:
            call()
        text = one_line(info.value)
        assert "[milter] check_user: " in text and needle in text


def test_case_sensitive_localpart_is_honoured(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, "[milter]\ncheck_user = Joe@example.com\n"
                              "case_sensitive_localpart = yes\n")
    s = SmtpSession(policy_settings(cfg), Services(FakeAccess({}), FakeStore(), FakeClock()))
    s.connect("client.example.net", socket.AF_INET, ("198.51.100.1", 25), {"j": "mx"}.get)
    s.helo("client.example.net")
    s.mail("<a@client.example.net>", (), NO_MACROS)
    assert not s.rcpt("<Joe@example.com>", ()).final
    assert s.rcpt("<joe@example.com>", ()).tag == "unknown user"


# --- [spf] ---------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (None, ()),
    ((), ()),
    (("*",), True),
    (("aol.com", "*"), True),
    ("yes", True),
    ("On", True),
    ("1", True),
    ("no", False),
    ("0", False),
    ("off", False),
    (("TRUE",), True),
    (("aol.com",), ("aol.com",)),
    (("AOL.com", "Yahoo.COM"), ("aol.com", "yahoo.com")),
    ("aol.com, yahoo.com", ("aol.com", "yahoo.com")),
    ("aol.com yahoo.com", ("aol.com", "yahoo.com")),
])
def test_domains_or_all(value: object, expected: object) -> None:
    assert domains_or_all(value) == expected


@pytest.mark.parametrize(("lines", "expected"), [
    ("", SpfSettings()),
    ("best_guess = yes\nreject_noptr = 1\n",
     SpfSettings(best_guess=True, reject_noptr=True)),
    ("reject_neutral = yes\naccept_softfail = yes\naccept_fail = yes\n",
     SpfSettings(reject_neutral=True, accept_softfail=True, accept_fail=True)),
    ("reject_neutral = no\naccept_fail = 0\n", SpfSettings()),
    ("reject_neutral = AOL.com, yahoo.com\naccept_softfail = bounces.amazon.com\n"
     "accept_fail = custhelp.com\n",
     SpfSettings(reject_neutral=("aol.com", "yahoo.com"),
                 accept_softfail=("bounces.amazon.com",), accept_fail=("custhelp.com",))),
    ("delegate = example.com\ntrusted_forwarder = fwd.example, careerbuilder.com\n",
     SpfSettings(delegate="example.com",
                 trusted_forwarder=("fwd.example", "careerbuilder.com"))),
])
def test_spf_settings(tmp_path: Path, lines: str, expected: SpfSettings) -> None:
    cfg = config_of(tmp_path, f"[spf]\n{lines}")
    assert spf_settings(cfg) == expected
    rt = build(cfg, tmp_path)
    assert isinstance(rt.services.spf, SpfPolicy) and rt.services.spf.settings == expected


# --- the access file -------------------------------------------------------------------

def test_empty_access_file_means_no_access_file(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, "[spf]\naccess_file =\n")
    access = open_access(cfg)
    assert isinstance(access, NoAccess)
    assert access.lookup("SPF-Fail", "a@b.example") is None and access.reload()
    rt = build(cfg, tmp_path)
    assert isinstance(rt.access, NoAccess) and rt.services.access is rt.access
    assert describe(rt)["access"] == "(none)"


@pytest.mark.parametrize("name", ["nope", "nope.db", "sub/dir/nope"])
def test_missing_access_file_is_named(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    cfg = config_of(tmp_path, f"[spf]\naccess_file = {path}\n")
    for call in (lambda: open_access(cfg), lambda: build(cfg, tmp_path)):
        with pytest.raises(RuntimeBuildError) as info:
            call()
        text = one_line(info.value)
        assert "[spf] access_file: " in text and text.startswith(str(tmp_path))
        assert str(path).removesuffix(".db") in text


def test_access_file_colon_option_reaches_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "access", "SPF-Fail!bad.example\tREJECT\n")
    cfg = config_of(tmp_path, f"[spf]\naccess_file = {path}\naccess_file_colon = no\n")
    access = open_access(cfg)
    assert isinstance(access, AccessFile)
    found = access.lookup("SPF-Fail", "x@bad.example")
    assert found is not None and found.kind.value == "REJECT"


# --- the state store ---------------------------------------------------------------------

def test_open_store_paths(tmp_path: Path) -> None:
    assert open_store(config_of(tmp_path, "")).path == str(tmp_path / "bms.sqlite")
    rel = open_store(config_of(tmp_path, "[state]\nbackend = sqlite:sub/state.db\n"))
    assert rel.path == str(tmp_path / "sub" / "state.db")
    absolute = tmp_path / "elsewhere" / "x.db"
    assert open_store(config_of(tmp_path, f"[state]\nbackend = sqlite:{absolute}\n")).path \
        == str(absolute)
    assert absolute.is_file()


def _parent_is_a_file(tmp_path: Path) -> str:
    (tmp_path / "plain").write_text("x", encoding="utf-8")
    return f"sqlite:{tmp_path}/plain/bms.sqlite"


def _not_a_database(tmp_path: Path) -> str:
    (tmp_path / "junk.db").write_bytes(b"this is not an SQLite database\n" * 200)
    return f"sqlite:{tmp_path}/junk.db"


def _a_directory(tmp_path: Path) -> str:
    (tmp_path / "adir").mkdir()
    return f"sqlite:{tmp_path}/adir"


@pytest.mark.parametrize(("make", "needle"), [
    (lambda p: "redis://127.0.0.1:99999/0", "Port out of range"),
    (_parent_is_a_file, "cannot open"),
    (_not_a_database, "cannot open"),
    (_a_directory, "cannot open"),
])
def test_open_store_errors_are_one_line(tmp_path: Path, make: Callable[[Path], str],
                                        needle: str) -> None:
    cfg = config_of(tmp_path, f"[state]\nbackend = {make(tmp_path)}\n")
    for call in (lambda: open_store(cfg), lambda: build(cfg, tmp_path)):
        with pytest.raises(RuntimeBuildError) as info:
            call()
        text = one_line(info.value)
        assert "[state] backend: " in text and needle in text


def test_a_given_store_is_kept(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, "[state]\nbackend = redis://127.0.0.1:6379/0\n")
    store = SqliteStore(tmp_path / "kept.sqlite")
    assert build(cfg, tmp_path, store=store).store is store  # open_store not consulted


# --- templates, DNS -----------------------------------------------------------------------

@pytest.mark.parametrize(("content", "needle"), [
    (b"\xff\xfe not utf-8\n\nbody\n", "cannot read"),
    (b"Subject: no blank line after the headers\n", "no blank line"),
])
def test_bad_dsn_template_in_datadir(tmp_path: Path, content: bytes, needle: str) -> None:
    (tmp_path / "fail.txt").write_bytes(content)
    with pytest.raises(RuntimeBuildError) as info:
        build(config_of(tmp_path, ""), tmp_path)
    text = one_line(info.value)
    assert text.startswith("DSN template: ") and str(tmp_path / "fail.txt") in text
    assert needle in text


def test_dns_settings(tmp_path: Path) -> None:
    cfg = config_of(tmp_path, "[dns]\nnameservers = 192.0.2.53, [2001:db8::53]:5353\n"
                              "timeout = 1.5\nlifetime = 4\ncache_size = 0\n")
    d = dns_settings(cfg)
    assert len(d.nameservers) == 2 and d.nameservers[0] == "192.0.2.53"
    assert (d.timeout, d.lifetime, d.cache_size) == (1.5, 4.0, 0)


def test_system_nameservers(tmp_path: Path) -> None:
    conf = write(tmp_path / "resolv.conf",
                 "# comment\nsearch example.net\nnameserver 192.0.2.1\n"
                 "nameserver fe80::1%eth0\nnameserver\noptions ndots:2\n")
    assert system_nameservers(conf) == ("192.0.2.1", "fe80::1")
    assert system_nameservers(str(tmp_path / "missing")) == ("127.0.0.1",)
    assert system_nameservers(write(tmp_path / "empty", "")) == ("127.0.0.1",)


def test_redis_backend_is_shared_state_and_ids_stay_local(tmp_path: Path) -> None:
    """With Redis the state is shared, but connection ids come from a local
    SQLite file: they must keep coming when Redis is down.  Nothing connects
    at startup (a Redis that is down only tempfails greylisting)."""
    cfg = config_of(tmp_path, "[state]\nbackend = redis://127.0.0.1:1/3\n")
    rt = build(cfg, tmp_path)
    assert type(rt.store).__name__ == "RedisStore"
    assert rt.store.path == "redis://127.0.0.1:1/3"
    assert isinstance(rt.ids, SqliteStore)
    first = rt.ids.reserve("connid", 5)
    assert rt.ids.reserve("connid", 1) == first + 5


def test_startup_imports_the_old_files_once_and_purges(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    logdir = tmp_path / "log"
    logdir.mkdir()
    (logdir / "banned_ips").write_text("192.0.2.7\nnot-an-ip\n")
    (logdir / "banned_domains").write_text("*.spam.example\n")
    (logdir / "auto_whitelist.log").write_text("friend@outside.example\n")
    cfg = config_of(tmp_path, "[greylist]\nenabled = 1\n")
    rt = build(cfg, tmp_path)
    rt.store.greylist(("192.0.2.0/24", "a@b.example", "c@d.example"), 1000.0,
                      GreylistSettings())  # long expired
    maintain_store(rt, str(logdir))
    now = time.time()
    assert rt.store.ip_banned("192.0.2.7", now)
    assert rt.store.domain_banned("www.spam.example", now)
    assert rt.store.listed("whitelist", "friend@outside.example", now + 1e9)
    assert any("banned_ips:2" in m and "not-an-ip" in m for m in caplog.messages)
    assert "Expired 1 greylist records." in caplog.messages
    rt.store.list_remove("whitelist", "friend@outside.example")
    maintain_store(rt, str(logdir))  # a restart: not imported again
    assert not rt.store.listed("whitelist", "friend@outside.example", now)
