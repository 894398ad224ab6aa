"""pyspf's ``spf.query`` with its DNS lookups going through our resolver.

Why a subclass: pyspf has no resolver parameter.  Every lookup of a query
ends in ``query.dns()``, which calls the *module-level* function
``spf.DNSLookup`` (dnspython's default resolver, i.e. ``/etc/resolv.conf``),
and the ``[spf] delegate`` feature reads the module global ``spf.DELEGATE``.
The original bms assigned both globals (``spf.DNSLookup = …``), which is
process-wide, untestable without monkeypatching and wrong as soon as two
configurations coexist (ARCHITECTURE.md rule 10).  :class:`ResolverQuery`
overrides the two methods that touch those globals instead:

* :meth:`ResolverQuery.dns` asks the :class:`SpfResolver` passed in and keeps
  what pyspf's ``dns()`` guarantees around the lookup: the per-query answer
  cache, the RFC 7208 4.6.4 void-lookup limit, invalid names giving ``[]``,
  a temporary DNS error becoming ``spf.TempError`` (result ``temperror``), and
  a time budget for the whole query (pyspf's ``querytime``; here a deadline
  on a monotonic clock).  CNAME chains are followed by the resolver
  (:mod:`bmslib.dns`), so pyspf's own chasing code is never needed.
* :meth:`ResolverQuery.dns_spf` adds the ``delegate`` fallback per query
  (``<domain>._spf.<delegate>`` when the domain publishes no record).

Everything else (parsing, macros, limits, lax processing, headers) is
pyspf's own code.  ``spf.DNSLookup`` and ``spf.DELEGATE`` are never written.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from typing import Any, Protocol

import spf

from ..interfaces import DnsTempError, Resolver

Clock = Callable[[], float]


class SpfResolver(Resolver, Protocol):
    """What SPF evaluation needs beyond :class:`~bmslib.interfaces.Resolver`:
    A and AAAA separately (an ``a`` mechanism for an IPv4 client asks for A
    only, so a broken AAAA server cannot turn it into ``temperror``).
    :class:`bmslib.dns.DnsResolver` implements it."""

    def a(self, name: str) -> list[str]:
        """A records, as IPv4 address text."""
        ...

    def aaaa(self, name: str) -> list[str]:
        """AAAA records, as IPv6 address text."""
        ...


def reverse_name_to_ip(name: str) -> str | None:
    """``4.3.2.1.in-addr.arpa`` -> ``1.2.3.4`` (and ``ip6.arpa`` nibbles)."""
    n = name.lower().rstrip(".")
    text: str | None = None
    if n.endswith(".in-addr.arpa"):
        text = ".".join(reversed(n[: -len(".in-addr.arpa")].split(".")))
    elif n.endswith(".ip6.arpa"):
        nibbles = n[: -len(".ip6.arpa")].split(".")[::-1]
        if len(nibbles) == 32 and all(len(x) == 1 for x in nibbles):
            hexes = "".join(nibbles)
            text = ":".join(hexes[i:i + 4] for i in range(0, 32, 4))
    if text is None:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


class ResolverQuery(spf.query):  # type: ignore[misc]  # pyspf is untyped
    """One SPF evaluation (``check()``, ``best_guess()``, ``get_header()``)
    with lookups through ``resolver``.

    ``local``/``domain`` override pyspf's split of ``sender`` at the first
    ``@`` (wrong for a quoted local part that contains one).  ``deadline``
    is a ``clock()`` value after which no new lookup starts (the lookup
    raises ``TempError``, so the result is ``temperror``)."""

    def __init__(self, resolver: SpfResolver, ip: str, sender: str, helo: str, *,
                 receiver: str, local: str | None = None, domain: str | None = None,
                 delegate: str | None = None, deadline: float | None = None,
                 clock: Clock = time.monotonic, lax: bool = True) -> None:
        # strict=False is pyspf's lax mode: a record with e.g. a misspelt
        # mechanism is still permerror, with the result it would have had
        # kept in perm_error.ext.  querytime=0: the budget is ours (deadline).
        super().__init__(ip, sender, helo, receiver=receiver, strict=not lax, querytime=0)
        if local is not None and domain is not None:
            self.l, self.o, self.d = local, domain, domain
        self.resolver = resolver
        self.delegate = delegate.strip(".") if delegate else None
        self.deadline = deadline
        self.clock = clock
        # What check() sets, so that get_header() works on an unchecked query.
        self.mechanism: str | None = None
        self.mech: list[str] = []
        self.prob = ""
        self.perm_error: Any = None

    # ------------------------------------------------------------ pyspf hooks

    def dns(self, name: Any, qtype: str, cnames: Any = None,
            ignore_void: bool = False) -> list[Any]:
        """pyspf's lookup primitive: a list of values (A/AAAA: address text;
        MX: ``(preference, host)``; PTR: names; TXT: a list of byte strings
        per record), ``[]`` for no data."""
        if not name:
            raise spf.PermError("empty domain name in a DNS lookup")
        text = str(name)
        if text.endswith("."):
            text = text[:-1]
        if not all(0 < len(label) < 64 for label in text.split(".")):
            return []  # cannot be a DNS name (pyspf: same, without a void count)
        text = text.lower()
        key = (text, qtype)
        cached: list[Any] | None = self.cache.get(key)
        if cached:
            return cached
        if self.deadline is not None and self.clock() >= self.deadline:
            raise spf.TempError("DNS Error: exceeded max query lookup time")
        try:
            result = self._fetch(text, qtype)
        except DnsTempError as exc:
            raise spf.TempError(f"DNS {exc}") from exc
        if result:
            self.cache[key] = result
        elif not ignore_void:
            self.void_lookups += 1
            if self.void_lookups > spf.MAX_VOID_LOOKUPS:
                raise spf.PermError(f"Void lookup limit of {spf.MAX_VOID_LOOKUPS} exceeded")
        return result

    def dns_spf(self, domain: str) -> str | None:
        record: str | None = super().dns_spf(domain)
        if record is not None or not self.delegate:
            return record
        if not all(0 < len(label) < 64 for label in domain.split(".")):
            return None
        found = [t for t in self.dns_txt(f"{domain}._spf.{self.delegate}", ignore_void=True)
                 if spf.RE_SPF.match(t)]
        if len(found) == 1:
            ascii_record: str = spf.to_ascii(found[0])
            return ascii_record
        return None

    # -------------------------------------------------------------- internals

    def _fetch(self, name: str, qtype: str) -> list[Any]:
        r = self.resolver
        if qtype == "A":
            return list(r.a(name))
        if qtype == "AAAA":
            return list(r.aaaa(name))
        if qtype == "MX":
            return [(pref, host) for pref, host in r.mx(name)]
        if qtype == "PTR":
            ip = reverse_name_to_ip(name)
            return list(r.ptr(ip)) if ip else []
        if qtype == "TXT":
            return [[record] for record in r.txt(name)]
        return []  # type SPF (99): obsolete, only asked for in pyspf's harsh mode
