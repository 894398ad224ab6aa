"""DNS blocklists (RFC 5782): the client IP against IP lists (``[dnsbl]
zones``), and the HELO name, the MAIL FROM domain and the From: domain
against domain lists (``[dnsbl] rhsbl``).

A zone is written ``zone`` (any answer in 127.0.0.0/8 lists) or
``zone=127.0.0.2,127.0.0.4`` (only those answers list).  Answers in
127.255.255.0/24 (the lists' own error codes: query refused, over quota),
answers outside 127.0.0.0/8, and lookups that time out are logged and never
list anyone.  Answers are cached by TTL in the resolver (``bmslib.dns``).

What a listing does comes from the access file: ``DNSBL:<zone>`` or
``RHSBL:<zone>`` (or the bare tag as the default) with OK, REJECT,
QUARANTINE, TEMPFAIL or ERROR:"..."; the default is REJECT, with the zone
named in the reply text and the listing's TXT record when there is one
(printable ASCII, cut short).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from ..interfaces import Access, DnsTempError
from ..log import escape
from .decision import CONTINUE, AccessKind, Decision
from .dmarc import domain_name
from .headertext import header_safe

log = logging.getLogger("bms")

ERROR_NET = ipaddress.ip_network("127.255.255.0/24")
LOOPBACK_NET = ipaddress.ip_network("127.0.0.0/8")
TXT_MAX = 200  # characters of a listing's TXT put into the reply


class BlocklistResolver(Protocol):
    def a(self, name: str) -> list[str]: ...

    def txt(self, name: str) -> list[bytes]: ...


@dataclass(frozen=True)
class Zone:
    name: str
    codes: frozenset[str] = frozenset()  # empty: any 127.0.0.0/8 answer lists


@dataclass(frozen=True)
class DnsblSettings:
    ip_zones: tuple[Zone, ...] = ()
    domain_zones: tuple[Zone, ...] = ()


@dataclass(frozen=True)
class Listing:
    tag: str  # "DNSBL" or "RHSBL"
    zone: str
    subject: str  # the IP or domain that is listed
    what: str  # "client", "HELO", "MAIL FROM", "From:"
    code: str  # the answer, 127.0.0.2
    txt: str = ""  # the listing's TXT, made safe


_ZONE_WORD = re.compile(r"[^\s,=]+(?:=[^\s,=]*(?:,[0-9][^\s,=]*)*)?")


def parse_zones(text: str) -> tuple[Zone, ...]:
    """Zones separated by blanks or commas, each ``zone`` or
    ``zone=127.0.0.2,127.0.0.4``; ValueError names a bad one."""
    zones = []
    for word in _ZONE_WORD.findall(text):
        name, eq, codes = word.partition("=")
        zone = domain_name(name)
        if zone is None:
            raise ValueError(f"not a zone name: {name!r}")
        found = set()
        for code in (c.strip() for c in codes.split(",") if c.strip()) if eq else ():
            try:
                ip = ipaddress.IPv4Address(code)
            except ValueError:
                raise ValueError(f"{name}: not an IPv4 answer code: {code!r}") from None
            found.add(str(ip))
        if eq and not found:
            raise ValueError(f"{name}: no answer codes after '='")
        zones.append(Zone(zone, frozenset(found)))
    return tuple(zones)


def reverse_ip(ip: str) -> str | None:
    """The query label of an address: ``2.0.0.127`` / 32 IPv6 nibbles."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.reverse_pointer.rsplit(".", 2)[0]


class Blocklists:
    """The lookups; each ``check_*`` gives the first listing or None."""

    def __init__(self, settings: DnsblSettings, resolver: BlocklistResolver) -> None:
        self.settings = settings
        self.resolver = resolver

    def check_ip(self, ip: str) -> Listing | None:
        label = reverse_ip(ip)
        if label is None:
            return None
        return self._first("DNSBL", self.settings.ip_zones, label, ip, "client")

    def check_domain(self, domain: str, what: str) -> Listing | None:
        name = domain_name(domain)
        if name is None or not self.settings.domain_zones or reverse_ip(name) is not None:
            return None
        return self._first("RHSBL", self.settings.domain_zones, name, name, what)

    def _first(self, tag: str, zones: Sequence[Zone], label: str, subject: str,
               what: str) -> Listing | None:
        for zone in zones:
            found = self._lookup(tag, zone, label, subject)
            if found is not None:
                return Listing(tag, zone.name, subject, what, *found)
        return None

    def _lookup(self, tag: str, zone: Zone, label: str, subject: str
                ) -> tuple[str, str] | None:
        qname = f"{label}.{zone.name}"
        if len(qname) > 253:
            return None
        try:
            answers = self.resolver.a(qname)
        except DnsTempError:
            log.info("%s: %s: no answer for %s: ignored", tag, zone.name, escape(subject))
            return None
        codes = []
        for a in answers:
            ip = ipaddress.ip_address(a)
            if ip in ERROR_NET or ip not in LOOPBACK_NET:
                log.warning("%s: %s answered %s for %s: an error code, ignored", tag,
                            zone.name, a, escape(subject))
            elif not zone.codes or a in zone.codes:
                codes.append(a)
        if not codes:
            return None
        try:
            texts = self.resolver.txt(qname)
        except DnsTempError:
            texts = []
        txt = header_safe(b" ".join(texts).decode("utf-8", "replace"), TXT_MAX)
        return min(codes), txt


def verdict(listing: Listing, access: Access) -> tuple[Decision, str]:
    """Log the listing and decide: ``(decision, quarantine reason)``.  A
    decision at MAIL may wait until DATA (delayed reject)."""
    what = (f"{listing.tag} {listing.what} {listing.subject} listed in {listing.zone} "
            f"({listing.code})")
    log.info("%s: %s%s", listing.tag, escape(what),
             escape(f": {listing.txt}") if listing.txt else "")
    value = access.lookup(listing.tag, listing.zone)
    kind = AccessKind.REJECT if value is None else value.kind
    if value is not None and kind is AccessKind.ERROR:
        return replace(value.error_decision(listing.tag, what), delay=True), ""
    text = f"{listing.subject} is listed in {listing.zone}"
    if kind is AccessKind.TEMPFAIL:
        return Decision.tempfail(listing.tag, f"{text}: try again later.", code="451",
                                 xcode="4.7.1", log=what, delay=True), ""
    if kind in (AccessKind.REJECT, AccessKind.BLACKLIST, AccessKind.BAN):
        lines = [text + "."] + ([listing.txt] if listing.txt else [])
        return Decision.reject(listing.tag, *lines, log=what, delay=True), ""
    if kind is AccessKind.QUARANTINE:
        return CONTINUE, what
    return CONTINUE, ""
