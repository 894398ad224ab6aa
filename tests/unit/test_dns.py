"""bmslib.dns without a server (settings, names, the TTL cache) and
ResolverQuery's lookup primitive over a zone table.  Real answers from NSD
are in tests/dnstier."""

from __future__ import annotations

import pytest
import spf

from bmslib.dns import DnsResolver, DnsSettings, TtlCache, make_backend, parse_nameserver, to_name
from bmslib.policy.spfquery import ResolverQuery, reverse_name_to_ip

from .spf_fakes import CLIENT, zone


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1", ("127.0.0.1", 53)),
    ("127.0.0.1:5353", ("127.0.0.1", 5353)),
    (" 192.0.2.1:53 ", ("192.0.2.1", 53)),
    ("::1", ("::1", 53)),
    ("2001:db8::1", ("2001:db8::1", 53)),
    ("[::1]:5353", ("::1", 5353)),
    ("[2001:db8::1]", ("2001:db8::1", 53)),
])
def test_parse_nameserver(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize("text", ["", "ns.example", "127.0.0.1:0", "127.0.0.1:70000",
                                  "127.0.0.1:x", "[::1", "[::1]x", "1.2.3.4.5"])
def test_parse_nameserver_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_nameserver(text)


def test_settings_validation() -> None:
    with pytest.raises(ValueError):
        DnsSettings(nameservers=())
    with pytest.raises(ValueError):
        DnsSettings(timeout=0)
    with pytest.raises(ValueError):
        DnsSettings(nameservers=("resolver.example",))
    s = DnsSettings(nameservers=("127.0.0.1:5353", "[::1]"))
    assert s.servers == [("127.0.0.1", 5353), ("::1", 53)]


def test_backend_uses_only_configured_servers() -> None:
    b = make_backend(DnsSettings(nameservers=("127.0.0.1:5353",), timeout=1, lifetime=3))
    assert [(ns.address, ns.port) for ns in b.nameservers] == [("127.0.0.1", 5353)]  # type: ignore[union-attr]
    assert (b.timeout, b.lifetime, b.cache) == (1, 3, None)


@pytest.mark.parametrize(("text", "ok"), [
    ("example.com", True), ("example.com.", True), ("h\xe9llo.example", True),
    ("", False), (".", False), ("a..b", False), ("x" * 64 + ".example", False),
    ("\udcff.example", False),
])
def test_to_name(text: str, ok: bool) -> None:
    assert (to_name(text) is not None) is ok


def test_invalid_names_are_empty_without_asking() -> None:
    class NoBackend:
        def resolve(self, *a: object, **kw: object) -> object:
            raise AssertionError("asked")

    r = DnsResolver(DnsSettings(), backend=NoBackend())  # type: ignore[arg-type]
    assert r.txt("a..b") == [] and r.a("") == [] and r.ptr("not an ip") == []


def test_ttl_cache() -> None:
    now = [100.0]
    c: TtlCache[str, int] = TtlCache(2, clock=lambda: now[0])
    c.put("a", 1, 10)
    c.put("b", 2, 20)
    assert c.get("a") == 1
    c.put("c", 3, 5)  # evicts the least recently used: b
    assert c.get("b") is None and len(c) == 2
    now[0] = 106.0
    assert c.get("c") is None and c.get("a") == 1
    now[0] = 111.0
    assert c.get("a") is None
    c.put("z", 0, 0)  # ttl 0: not cached
    assert c.get("z") is None
    off: TtlCache[str, int] = TtlCache(0)
    off.put("a", 1, 10)
    assert off.get("a") is None


@pytest.mark.parametrize(("name", "ip"), [
    ("66.2.0.192.in-addr.arpa", "192.0.2.66"),
    ("66.2.0.192.in-addr.arpa.", "192.0.2.66"),
    ("6.6.0.0." + "0." * 20 + "8.b.d.0.1.0.0.2.ip6.arpa", "2001:db8::66"),
    ("1.2.3.in-addr.arpa", None),
    ("x.in-addr.arpa", None),
    ("example.com", None),
])
def test_reverse_name_to_ip(name: str, ip: str | None) -> None:
    assert reverse_name_to_ip(name) == ip


def query(sender: str = "a@pass.example", **kw: object) -> ResolverQuery:
    return ResolverQuery(zone(), CLIENT, sender, "helo.example", receiver="mx.test",
                         **kw)  # type: ignore[arg-type]


def test_query_dns_shapes_and_cache() -> None:
    q = query()
    assert q.dns("pass.example", "TXT") == [[b"v=spf1 ip4:192.0.2.66 ip6:2001:db8::66 -all"]]
    assert q.dns("none.example", "MX") == [(10, "mx.none.example")]
    assert q.dns("guess.example", "A") == [CLIENT]
    asked = q.resolver.asked  # type: ignore[attr-defined]
    n = len(asked)
    q.dns("PASS.example.", "TXT")  # per-query cache, case-insensitive
    assert len(asked) == n


def test_query_void_lookup_limit() -> None:
    q = query()
    q.dns("nx1.example", "A")
    q.dns("nx2.example", "A")
    with pytest.raises(spf.PermError):
        q.dns("nx3.example", "A")


def test_query_temp_error_and_deadline() -> None:
    with pytest.raises(spf.TempError):
        query().dns("broken.example", "TXT")
    q = query(deadline=5.0, clock=lambda: 6.0)
    with pytest.raises(spf.TempError):
        q.dns("pass.example", "TXT")


def test_query_bad_labels_are_empty() -> None:
    q = query()
    assert q.dns("a..example", "A") == []
    assert q.dns("x" * 64 + ".example", "TXT") == []
    with pytest.raises(spf.PermError):
        q.dns("", "A")


def test_query_does_not_touch_pyspf_globals() -> None:
    before = (spf.DNSLookup, spf.DELEGATE)
    q = query("a@deleg.example", delegate="local.example")
    assert q.check()[0] == "pass"
    assert (spf.DNSLookup, spf.DELEGATE) == before


def test_quoted_local_part_split() -> None:
    q = query('"x@y"@pass.example', local="x@y", domain="pass.example")
    assert (q.l, q.o, q.d) == ("x@y", "pass.example", "pass.example")
    assert q.check()[0] == "pass"
