"""DNS lookups for the policy: :class:`DnsResolver` implements
:class:`bmslib.interfaces.Resolver` over dnspython.

Only the servers named in ``[dns] nameservers`` are asked: the resolver is a
``dns.resolver.Resolver(configure=False)``, so ``/etc/resolv.conf`` is never
read and dnspython's module-level default resolver is never used (in tests
every query goes to the NSD of the test bed; TESTBED.md rule one).

Contract (the ``Resolver`` protocol):

* a name that does not exist (NXDOMAIN), has no record of the type (NODATA),
  or cannot be a DNS name at all (an empty or over-long label, 8-bit text
  that is not IDNA) gives ``[]``;
* an answer that cannot be had now raises
  :class:`~bmslib.interfaces.DnsTempError`: every server timed out, answered
  SERVFAIL/REFUSED, or sent something unusable, or the lifetime ran out.  A
  *referral* (no answer, no SOA, only NS records: the server is authoritative
  for a parent zone and does not recurse for us) is such an unusable answer;
  treating it as "no record" would turn a broken setup into SPF ``none``.

CNAME chains are followed: dnspython resolves a chain inside one response;
when a server returns only the CNAME (an authoritative server whose target is
in another zone), the target is asked for in turn, at most
:data:`MAX_CNAME` times, loops ending in ``[]``.

Answers are cached per :class:`DnsResolver` instance (thread-safe, LRU,
bounded), positive ones for their TTL (the smallest along a CNAME chain) and
negative ones for the SOA minimum of RFC 2308, both capped by the settings.
Temporary errors are never cached.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, cast

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.MX
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.resolver
import dns.reversename
import dns.rrset

from . import metrics
from .interfaces import DnsTempError

log = logging.getLogger(__name__)

MAX_CNAME = 10  # CNAME hops followed across queries (pyspf's MAX_CNAME)

RdataType = dns.rdatatype.RdataType


def parse_nameserver(text: str) -> tuple[str, int]:
    """``"127.0.0.1"``, ``"127.0.0.1:5353"``, ``"::1"``, ``"[::1]:5353"`` ->
    ``(ip, port)``; raises ValueError for anything else (host names too: a
    resolver cannot need DNS to find itself)."""
    t = text.strip()
    port = 53
    if t.startswith("["):
        end = t.find("]")
        if end < 0:
            raise ValueError(f"nameserver {text!r}: missing ']'")
        host, rest = t[1:end], t[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"nameserver {text!r}: expected :PORT after ']'")
            port = _port(text, rest[1:])
    elif t.count(":") == 1:
        host, _, p = t.partition(":")
        port = _port(text, p)
    else:
        host = t  # IPv4, or a bare IPv6 address (two or more colons)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"nameserver {text!r}: not an IP address "
                         "(IP, IP:PORT or [IPv6]:PORT)") from None
    return str(ip), port


def _port(text: str, p: str) -> int:
    if not p.isdigit() or not 0 < int(p) < 65536:
        raise ValueError(f"nameserver {text!r}: bad port {p!r}")
    return int(p)


@dataclass(frozen=True)
class DnsSettings:
    """``[dns]``: where and how long to ask."""

    nameservers: tuple[str, ...] = ("127.0.0.1",)  # IP, IP:PORT or [IPv6]:PORT
    timeout: float = 2.0  # seconds per attempt at one server
    lifetime: float = 5.0  # seconds for one lookup, all servers and retries
    cache_size: int = 10000  # answers kept; 0 turns the cache off
    max_ttl: int = 86400  # cap on positive TTLs (seconds)
    max_negative_ttl: int = 3600  # cap on NXDOMAIN/NODATA TTLs (seconds)

    def __post_init__(self) -> None:
        if not self.nameservers:
            raise ValueError("at least one nameserver is needed")
        for ns in self.nameservers:
            parse_nameserver(ns)
        if self.timeout <= 0 or self.lifetime <= 0:
            raise ValueError("DNS timeout and lifetime must be positive")
        if self.cache_size < 0 or self.max_ttl < 0 or self.max_negative_ttl < 0:
            raise ValueError("DNS cache size and TTL caps cannot be negative")

    @property
    def servers(self) -> list[tuple[str, int]]:
        return [parse_nameserver(ns) for ns in self.nameservers]


class Backend(Protocol):
    """The part of ``dns.resolver.Resolver`` used here (tests pass a fake)."""

    def resolve(self, qname: dns.name.Name, rdtype: RdataType, *, search: bool,
                raise_on_no_answer: bool) -> dns.resolver.Answer: ...


def set_nameservers(r: dns.resolver.Resolver, servers: list[tuple[str, int]]) -> None:
    """``IP:PORT`` servers on dnspython >= 2.4 (``dns.nameserver``) and on
    Debian 12's 2.3 (addresses plus ``nameserver_ports``)."""
    try:
        import dns.nameserver
    except ImportError:
        r.nameservers = [ip for ip, _port in servers]
        setattr(r, "nameserver_ports", dict(servers))  # noqa: B010 - 2.3 only
        return
    r.nameservers = [dns.nameserver.Do53Nameserver(ip, port) for ip, port in servers]


def make_backend(settings: DnsSettings) -> dns.resolver.Resolver:
    """A dnspython resolver that knows only the configured servers."""
    r = dns.resolver.Resolver(configure=False)
    set_nameservers(r, settings.servers)
    r.timeout = settings.timeout
    r.lifetime = settings.lifetime
    r.cache = None  # DnsResolver caches (parsed answers, with negative TTLs)
    r.use_edns(0, 0, 1232)
    return r


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A bounded LRU map whose entries expire; safe to share between threads."""

    def __init__(self, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self._clock = clock
        self._lock = threading.Lock()
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return None
            if item[0] <= self._clock():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return item[1]

    def put(self, key: K, value: V, ttl: float) -> None:
        if self.size <= 0 or ttl <= 0:
            return
        with self._lock:
            self._data[key] = (self._clock() + ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)


Records = tuple[object, ...]


def to_name(text: str) -> dns.name.Name | None:
    """An absolute DNS name, or None when ``text`` cannot be one."""
    t = text.strip()
    if not t or t == ".":
        return None
    try:
        return dns.name.from_text(t)
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return None


_KEY_TEXT_MAX = 300  # longer text is no DNS name (255 octets) worth remembering


@functools.lru_cache(maxsize=4096)
def _name_and_key(text: str) -> tuple[dns.name.Name, str] | None:
    """``to_name(text)`` and its cache-key text (canonical form), remembered:
    every message asks for the same few names, and building a ``dns.name.Name``
    costs more than the cache lookup it is for."""
    qname = to_name(text)
    if qname is None:
        return None
    return qname, qname.canonicalize().to_text()


def _has_soa(response: dns.message.Message) -> bool:
    return any(r.rdtype == dns.rdatatype.SOA for r in response.authority)


def _is_referral(response: dns.message.Message) -> bool:
    """No answer, no SOA, NS records in the authority section, not
    authoritative: "ask them, not me" (RFC 1034 4.3.1)."""
    if response.flags & dns.flags.AA or _has_soa(response):
        return False
    return any(r.rdtype == dns.rdatatype.NS for r in response.authority)


def _negative_ttl(exc: dns.resolver.NXDOMAIN) -> int:
    try:
        responses: dict[dns.name.Name, dns.message.QueryMessage] = exc.kwargs["responses"]
        return min(int(r.resolve_chaining().minimum_ttl) for r in responses.values())
    except Exception:  # a malformed response: cache briefly
        return 60


class DnsResolver:
    """:class:`bmslib.interfaces.Resolver` over dnspython, with a TTL cache.

    ``backend`` and ``clock`` are for tests: a fake with dnspython's
    ``resolve()`` signature, and the clock the cache expires by."""

    def __init__(self, settings: DnsSettings, *, backend: Backend | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._backend: Backend = backend if backend is not None else make_backend(settings)
        self._cache: TtlCache[tuple[int, str], Records] = TtlCache(settings.cache_size, clock)

    # ---------------------------------------------------------------- Resolver

    def a(self, name: str) -> list[str]:
        """A records, as IPv4 address text."""
        return [str(x) for x in self._lookup(name, RdataType.A)]

    def aaaa(self, name: str) -> list[str]:
        """AAAA records, as IPv6 address text."""
        return [str(x) for x in self._lookup(name, RdataType.AAAA)]

    def addresses(self, name: str) -> list[str]:
        """A and AAAA records (A first)."""
        return self.a(name) + self.aaaa(name)

    def ptr(self, ip: str) -> list[str]:
        """PTR names of an address, without the trailing dot; ``[]`` for text
        that is not an IP address."""
        try:
            rev = dns.reversename.from_address(ip.strip())
        except (dns.exception.DNSException, ValueError):
            return []
        return [str(x) for x in self._lookup(rev.to_text(), RdataType.PTR)]

    def mx(self, domain: str) -> list[tuple[int, str]]:
        """``(preference, host)`` sorted by preference; a null MX (RFC 7505)
        has host ``""``."""
        found = [cast(tuple[int, str], x) for x in self._lookup(domain, RdataType.MX)]
        return sorted(found)

    def txt(self, name: str) -> list[bytes]:
        """TXT records, each with its character-strings joined."""
        return [cast(bytes, x) for x in self._lookup(name, RdataType.TXT)]

    def clear_cache(self) -> None:
        self._cache.clear()

    # ---------------------------------------------------------------- internals

    def _lookup(self, name: str, rdtype: RdataType) -> Records:
        if len(name) <= _KEY_TEXT_MAX:
            found = _name_and_key(name)
        else:
            qname = to_name(name)
            found = None if qname is None else (qname, qname.canonicalize().to_text())
        if found is None:
            return ()
        qname, text = found
        key = (int(rdtype), text)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        records, ttl, positive = self._resolve(qname, rdtype)
        cap = self.settings.max_ttl if positive else self.settings.max_negative_ttl
        self._cache.put(key, records, min(ttl, cap))
        return records

    def _query(self, qname: dns.name.Name, rdtype: RdataType) -> dns.resolver.Answer:
        """One lookup at the servers, timed for the metrics."""
        started = time.perf_counter()
        outcome = "error"
        try:
            answer = self._backend.resolve(qname, rdtype, search=False,
                                           raise_on_no_answer=False)
            outcome = "answer" if answer.rrset is not None else "nodata"
            return answer
        except dns.resolver.NXDOMAIN:
            outcome = "nxdomain"
            raise
        except dns.exception.Timeout:
            outcome = "timeout"
            raise
        finally:
            metrics.dns(time.perf_counter() - started, outcome, rdtype.name)

    def _resolve(self, qname: dns.name.Name, rdtype: RdataType) -> tuple[Records, int, bool]:
        """``(records, ttl, positive)``; raises DnsTempError."""
        ttl = 2**31 - 1
        seen = {qname}
        current = qname
        for _hop in range(MAX_CNAME + 1):
            try:
                answer = self._query(current, rdtype)
            except dns.resolver.NXDOMAIN as exc:
                return (), min(ttl, _negative_ttl(exc)), False
            except dns.exception.Timeout as exc:
                raise DnsTempError(f"{current} {rdtype.name}: timeout ({exc})") from exc
            except dns.resolver.NoNameservers as exc:
                if _chain_too_long(exc):  # a CNAME loop inside one zone: no data
                    log.debug("CNAME chain too long at %s", current)
                    return (), ttl if ttl < 2**31 - 1 else 60, False
                raise DnsTempError(f"{current} {rdtype.name}: no server answered "
                                   f"({exc})") from exc
            except dns.exception.DNSException as exc:
                raise DnsTempError(f"{current} {rdtype.name}: {exc}") from exc
            chain = answer.chaining_result
            ttl = min(ttl, int(chain.minimum_ttl))
            if answer.rrset is not None:
                return tuple(_records(answer.rrset)), ttl, True
            response = answer.response
            target = chain.canonical_name
            if target != current and not _has_soa(response):
                # The server gave only the CNAME: ask for its target ourselves.
                if target in seen:
                    log.debug("CNAME loop at %s", target)
                    return (), ttl, False
                seen.add(target)
                current = target
                continue
            if _is_referral(response):
                raise DnsTempError(f"{current} {rdtype.name}: referral instead of an "
                                   "answer (the nameserver does not recurse)")
            return (), ttl, False
        log.debug("CNAME chain longer than %d at %s", MAX_CNAME, qname)
        return (), ttl, False


def _chain_too_long(exc: dns.resolver.NoNameservers) -> bool:
    """Every server answered, with a CNAME chain dnspython refused to follow."""
    errors = exc.kwargs.get("errors") or []
    return bool(errors) and all(isinstance(e[3], dns.message.ChainTooLong) for e in errors)


def _records(rrset: dns.rrset.RRset) -> list[object]:
    out: list[object] = []
    for rd in rrset:
        if isinstance(rd, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA):
            out.append(rd.address)
        elif isinstance(rd, dns.rdtypes.ANY.MX.MX):
            host = rd.exchange.to_text(omit_final_dot=True)
            out.append((int(rd.preference), "" if host == "." else host))
        elif isinstance(rd, dns.rdtypes.ANY.PTR.PTR):
            out.append(rd.target.to_text(omit_final_dot=True))
        elif isinstance(rd, dns.rdtypes.ANY.TXT.TXT):
            out.append(b"".join(rd.strings))
        elif isinstance(rd, dns.rdtypes.ANY.CNAME.CNAME):
            continue  # only when CNAME itself was asked for; not used here
    return out
