"""pymilter's ``Milter.dns``: DNS look-ups with a per-session cache, on
dnspython (pymilter uses pydns).  Results have pydns's shapes: ``A`` a
dotted quad, ``AAAA`` the 16 address bytes, ``MX`` (preference, host),
``PTR``/``NS``/``CNAME`` a name without the final dot, ``TXT``/``SPF`` a
tuple of the record's byte strings.  Failures other than "no such name"
raise :class:`DNSError`.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

__all__ = ["MAX_CNAME", "DNSError", "DNSLookup", "Session"]

MAX_CNAME = 10


class DNSError(Exception):
    """A DNS look-up failed (time-out, SERVFAIL, bad name, CNAME loop)."""


def _value(rr: Any) -> Any:
    kind = dns.rdatatype.to_text(rr.rdtype)
    if kind == "A":
        return str(rr.address)
    if kind == "AAAA":
        return ipaddress.IPv6Address(rr.address).packed
    if kind == "MX":
        return (int(rr.preference), rr.exchange.to_text(omit_final_dot=True))
    if kind in ("TXT", "SPF"):
        return tuple(bytes(s) for s in rr.strings)
    if hasattr(rr, "target"):
        return rr.target.to_text(omit_final_dot=True)
    return rr.to_text()


def DNSLookup(name: str, qtype: str) -> list[tuple[tuple[str, str], Any]]:
    """All answer records of one query as ((name, type), value) pairs; []
    when the name does not exist."""
    try:
        answer = dns.resolver.resolve(name, qtype, raise_on_no_answer=False, search=False)
    except dns.resolver.NXDOMAIN:
        return []
    except dns.exception.DNSException as x:
        raise DNSError(f"{name} {qtype}: {x}") from None
    if answer.response is None:
        return []
    result: list[tuple[tuple[str, str], Any]] = []
    for rrset in answer.response.answer:
        owner = rrset.name.to_text(omit_final_dot=True).lower()
        kind = dns.rdatatype.to_text(rrset.rdtype)
        result.extend(((owner, kind), _value(rr)) for rr in rrset)
    return result


class Session:
    """A cache without TTLs, valid for one session (an SMTP conversation)."""

    #: (query type, record type) pairs whose extra answers may be cached:
    #: records a PTR answer carries, say, must not poison A or MX look-ups.
    SAFE2CACHE = frozenset((
        ("MX", "MX"), ("MX", "A"), ("CNAME", "CNAME"), ("CNAME", "A"), ("A", "A"),
        ("AAAA", "AAAA"), ("PTR", "PTR"), ("NS", "NS"), ("NS", "A"), ("TXT", "TXT"),
        ("SPF", "SPF"),
    ))

    def __init__(self) -> None:
        self.cache: dict[tuple[str, str], list[Any]] = {}

    def dns(self, name: str, qtype: str, cnames: dict[str, str] | None = None) -> list[Any]:
        """The values of ``name``'s ``qtype`` records ([] if none), following
        CNAMEs (``DNSError`` for a loop or a chain over ``MAX_CNAME``)."""
        name = name.rstrip(".").lower()
        if not name or not all(0 < len(label) < 64 for label in name.split(".")):
            return []  # not a valid DNS name
        cached = self.cache.get((name, qtype))
        if cached:
            return cached
        cname_key = (name, "CNAME")
        cname: str | None = None
        if cname_key in self.cache:
            cname = self.cache[cname_key][0]
            result: list[Any] = []
        else:
            for key, value in DNSLookup(name, qtype):
                if key == cname_key:
                    cname = value
                if key[1] == "CNAME" or (qtype, key[1]) in self.SAFE2CACHE:
                    self.cache.setdefault(key, []).append(value)
            result = self.cache.get((name, qtype), [])
        if not result and cname:
            chain = {} if cnames is None else cnames
            if len(chain) >= MAX_CNAME:
                raise DNSError(f"Length of CNAME chain exceeds {MAX_CNAME}")
            chain[name] = cname
            if cname.lower().rstrip(".") in chain:
                raise DNSError("CNAME loop")
            result = self.dns(cname, qtype, cnames=chain)
            if result:
                self.cache[(name, qtype)] = result
        return result

    def dns_txt(self, domainname: str, enc: str = "ascii") -> list[str]:
        """``domainname``'s TXT records, each joined and decoded."""
        if not domainname:
            return []
        try:
            return [b"".join(parts).decode(enc) for parts in self.dns(domainname, "TXT")]
        except UnicodeDecodeError:
            raise DNSError("Non-ascii character in TXT record.") from None
