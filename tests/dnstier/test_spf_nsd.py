"""The DNS tier: DnsResolver and SpfPolicy against a real NSD serving the
shared test zone (testbed.nsd), inside the private network namespace."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import dns.name
import dns.rdatatype
import dns.resolver
import pytest
from fakes import FakeAccess
from testbed.nsd import (
    CLIENT6_IP,
    CLIENT6_PTR,
    CLIENT_IP,
    CLIENT_PTR,
    DYN_IP,
    DYN_PTR,
    FORWARDER_IP,
    SINK_HOST,
    SINK_IP,
    SPF_RESULTS,
    Nsd,
)

from bmslib.dns import DnsResolver, DnsSettings, make_backend
from bmslib.interfaces import DnsTempError
from bmslib.policy.address import parse_address
from bmslib.policy.connection import Connection
from bmslib.policy.decision import Action
from bmslib.policy.dynip import is_dynamic
from bmslib.policy.spf import SpfPolicy, SpfSettings

pytestmark = pytest.mark.e2e


def resolver(nsd: Nsd, **kw: object) -> DnsResolver:
    settings = DnsSettings(nameservers=(nsd.nameserver,), timeout=0.5, lifetime=1.5,
                           **kw)  # type: ignore[arg-type]
    return DnsResolver(settings)


def conn(ip: str = CLIENT_IP, hostname: str = CLIENT_PTR, dyn: bool = False) -> Connection:
    return Connection(hostname, ip, 4000, False, False, False, dyn, "mx.example.test", None)


# --- the resolver ----------------------------------------------------------------

@pytest.mark.parametrize(("method", "name", "expected"), [
    ("txt", "pass.test", [b"v=spf1 ip4:198.51.100.66 ip6:2001:db8::66 -all"]),
    ("txt", "split.test", [b"v=spf1 ip4:198.51.100.66 ip6:2001:db8::66 -all"]),
    ("txt", "alias2.test", [b"v=spf1 ip4:198.51.100.66 ip6:2001:db8::66 -all"]),
    ("txt", "loop1.test", []),
    ("txt", "nxdomain.test", []),
    ("a", "pass.test", []),  # NODATA
    ("mx", "pass.test", [(10, SINK_HOST)]),
    ("mx", "nullmx.test", [(0, "")]),
    ("a", SINK_HOST, [SINK_IP]),
    ("addresses", CLIENT_PTR, [CLIENT_IP, CLIENT6_IP]),
    ("aaaa", CLIENT_PTR, [CLIENT6_IP]),
    ("ptr", CLIENT_IP, [CLIENT_PTR]),
    ("ptr", CLIENT6_IP, [CLIENT6_PTR]),
    ("ptr", "198.51.100.68", []),
    ("ptr", "not an ip", []),
    ("txt", "h\xe9llo.test", []),
    ("txt", "a..test", []),
])
def test_resolver_answers(nsd: Nsd, method: str, name: str, expected: list[object]) -> None:
    assert getattr(resolver(nsd), method)(name) == expected


def test_referral_is_a_temporary_error(nsd: Nsd) -> None:
    with pytest.raises(DnsTempError):
        resolver(nsd).txt("temperror.test")


class Counting:
    def __init__(self, backend: dns.resolver.Resolver) -> None:
        self.backend = backend
        self.calls = 0

    def resolve(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType, *,
                search: bool, raise_on_no_answer: bool) -> dns.resolver.Answer:
        self.calls += 1
        return self.backend.resolve(qname, rdtype, search=search,
                                    raise_on_no_answer=raise_on_no_answer)


def test_ttl_cache(nsd: Nsd) -> None:
    settings = DnsSettings(nameservers=(nsd.nameserver,), timeout=0.5, lifetime=1.5)
    now = [0.0]
    backend = Counting(make_backend(settings))
    r = DnsResolver(settings, backend=backend, clock=lambda: now[0])
    assert r.txt("ttl60.test") == [b"short-lived"]
    assert r.txt("TTL60.test.") == [b"short-lived"]
    assert backend.calls == 1
    now[0] = 59.0
    r.txt("ttl60.test")
    assert backend.calls == 1
    now[0] = 61.0  # the record's TTL is 60 s
    r.txt("ttl60.test")
    assert backend.calls == 2
    assert r.txt("nxdomain.test") == [] and r.txt("nxdomain.test") == []
    assert backend.calls == 3  # negative answers are cached (SOA minimum 60 s)
    now[0] = 200.0
    r.txt("nxdomain.test")
    assert backend.calls == 4
    for _ in range(2):
        with pytest.raises(DnsTempError):
            r.txt("temperror.test")
    assert backend.calls == 6  # temporary errors are never cached


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A UDP "nameserver" that reads queries and never answers."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.9", 0))
    s.settimeout(0.2)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            try:
                s.recv(4096)
            except OSError:
                continue

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    yield f"127.0.0.9:{s.getsockname()[1]}"
    stop.set()
    t.join()
    s.close()


def test_timeout_within_lifetime(black_hole: str) -> None:
    r = DnsResolver(DnsSettings(nameservers=(black_hole,), timeout=0.3, lifetime=1.0))
    start = time.monotonic()
    with pytest.raises(DnsTempError):
        r.txt("pass.test")
    assert time.monotonic() - start < 2.0
    policy = SpfPolicy(SpfSettings(), r, FakeAccess({}))
    start = time.monotonic()
    res = policy(conn(), "mail.pass.test", parse_address("<a@pass.test>"))
    assert time.monotonic() - start < 2.0
    assert res.result == "temperror" and res.decision.action is Action.TEMPFAIL
    assert (res.decision.code, res.decision.xcode) == ("451", "4.3.0")


# --- SPF --------------------------------------------------------------------------

EXPECTED = {"pass": Action.CONTINUE, "fail": Action.REJECT, "softfail": Action.CONTINUE,
            "neutral": Action.CONTINUE, "none": Action.CONTINUE, "permerror": Action.REJECT,
            "temperror": Action.TEMPFAIL}


@pytest.mark.parametrize(("domain", "result"), sorted(SPF_RESULTS.items()))
@pytest.mark.parametrize("ip", [CLIENT_IP, CLIENT6_IP])
def test_every_result(nsd: Nsd, domain: str, result: str, ip: str) -> None:
    policy = SpfPolicy(SpfSettings(), resolver(nsd), FakeAccess({}))
    start = time.monotonic()
    r = policy(conn(ip), "mail.pass.test", parse_address(f"<user@{domain}>"))
    assert time.monotonic() - start < 3.0
    assert r.result == result
    action = Action.CONTINUE if domain == "laxpass.test" else EXPECTED[result]
    assert r.decision.action is action
    assert r.received_spf is not None and f"client-ip={ip};" in r.received_spf
    assert r.authres == (f"spf={result} smtp.mailfrom=user@{domain}",)


def test_softfail_cbv_to_sink(nsd: Nsd) -> None:
    r = SpfPolicy(SpfSettings(), resolver(nsd), FakeAccess({}))(
        conn(), "mail.pass.test", parse_address("<user@softfail.test>"))
    assert r.cbv is not None and r.cbv.target.mailbox == "user@softfail.test"
    assert resolver(nsd).mx("softfail.test") == [(10, SINK_HOST)]


@pytest.mark.parametrize(("sender", "helo", "ip", "dyn", "key_result"), [
    ("<user@guess.test>", "mail.pass.test", CLIENT_IP, False, "pass"),
    ("<user@none.test>", "mail.pass.test", CLIENT_IP, False, "neutral"),  # MX elsewhere
    ("<user@nomx.test>", "mail.pass.test", CLIENT_IP, False, "neutral"),
    ("<user@nomx.test>", "helo-bad.test", DYN_IP, True, "none"),  # 3 strikes
    ("<user@nomx.test>", "helo-spf.test", DYN_IP, True, "neutral"),
    ("<user@nomx.test>", DYN_PTR, DYN_IP, True, "neutral"),  # HELO valid by A
    ("<user@nomx.test>", "[198.51.100.67]", DYN_IP, True, "none"),
])
def test_best_guess(nsd: Nsd, sender: str, helo: str, ip: str, dyn: bool,
                    key_result: str) -> None:
    access = FakeAccess({})
    hostname = DYN_PTR if ip == DYN_IP else CLIENT_PTR
    r = SpfPolicy(SpfSettings(best_guess=True), resolver(nsd), access)(
        conn(ip, hostname, dyn), helo, parse_address(sender))
    assert r.result == "none"
    assert access.asked[0][0] == "SPF-" + key_result.capitalize()
    if key_result == "none":
        assert r.cbv is not None and r.cbv.template is None


def test_delegate(nsd: Nsd) -> None:
    s = SpfSettings(delegate="delegate.test")
    r = SpfPolicy(s, resolver(nsd), FakeAccess({}))(
        conn(), "mail.pass.test", parse_address("<user@delegated.test>"))
    assert r.result == "pass"


def test_trusted_forwarder(nsd: Nsd) -> None:
    s = SpfSettings(trusted_forwarder=("forwarder.test",))
    r = SpfPolicy(s, resolver(nsd), FakeAccess({}))(
        conn(FORWARDER_IP, "fwd.example"), "fwd.example", parse_address("<user@fail.test>"))
    assert r.result == "fail" and r.whitelist and r.decision.action is Action.CONTINUE


def test_zone_ptrs_and_dynip(nsd: Nsd) -> None:
    r = resolver(nsd)
    assert r.ptr(DYN_IP) == [DYN_PTR] and is_dynamic(DYN_PTR, DYN_IP)
    assert not is_dynamic(CLIENT_PTR, CLIENT_IP)
    assert r.a("helo-a.test") == [CLIENT_IP]
