"""Who is connecting: the connection classes of SPEC §4, decided at connect.

INTERNAL (``internal_connect``), TRUSTED (``trusted_relay``), SMTP AUTH
(decided later, at MAIL FROM, from ``{auth_authen}``; it counts as internal)
and DYN (no PTR, or a PTR that looks dynamic).  The log line is::

    connect from HOST at (IP, PORT) EXTERNAL|INTERNAL [TRUSTED] [DYN]
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..interfaces import DnsTempError, Resolver

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_ASCII_DIGIT = re.compile(r"[0-9]")


def parse_ip(text: str | None) -> IPAddress | None:
    """An IP address, with sendmail's ``IPv6:`` prefix and brackets allowed;
    v4-mapped IPv6 addresses become IPv4.  ``None`` when it is not an IP."""
    if not text:
        return None
    t = text.strip()
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    if t[:5].lower() == "ipv6:":
        t = t[5:]
    if ":" not in t and not _ASCII_DIGIT.search(t):
        return None  # neither IPv6 (has colons) nor IPv4 (ASCII digits): skip the parse
    try:
        ip = ipaddress.ip_address(t)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class IpList:
    """An ``internal_connect``-style list: CIDR networks (IPv4 and IPv6), bare
    addresses, glob patterns on the address text (``127.*``, ``192.168.*``)
    and host names (``mx.example.com``, optionally ``/len``), which are
    resolved through the configured resolver when matched."""

    def __init__(self, items: Sequence[str]) -> None:
        self.items = tuple(items)
        self.networks: list[IPNetwork] = []
        self.globs: list[str] = []
        self.hosts: list[tuple[str, int | None]] = []
        for raw in self.items:
            item = raw.strip()
            if not item:
                continue
            if any(c in item for c in "*?["):
                self.globs.append(item)
                continue
            try:
                self.networks.append(ipaddress.ip_network(item, strict=False))
                continue
            except ValueError:
                pass
            name, _, bits = item.partition("/")
            if not bits.isdigit() and bits:
                raise ValueError(f"{raw!r} is neither a network, a glob nor a host name")
            self.hosts.append((name.lower(), int(bits) if bits else None))

    def __bool__(self) -> bool:
        return bool(self.networks or self.globs or self.hosts)

    def resolve(self, resolver: Resolver) -> list[str]:
        """Look the host names up now (at start and reload): the ones that
        resolve become networks; the others stay names looked up per
        connection.  Returns one line per name that does not resolve."""
        problems: list[str] = []
        unresolved: list[tuple[str, int | None]] = []
        for name, bits in self.hosts:
            try:
                addresses = [ip for ip in map(parse_ip, resolver.addresses(name)) if ip]
            except DnsTempError as exc:
                problems.append(f"host name {name} cannot be resolved now ({exc}); "
                                "it is looked up again per connection")
                unresolved.append((name, bits))
                continue
            if not addresses:
                problems.append(f"host name {name} does not resolve (no A/AAAA record); "
                                "it matches no client until it does")
                unresolved.append((name, bits))
            for ip in addresses:
                prefix = ip.max_prefixlen if bits is None else min(bits, ip.max_prefixlen)
                self.networks.append(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
        self.hosts = unresolved
        return problems

    def matches(self, ip: IPAddress | None, resolver: Resolver | None = None) -> bool:
        if ip is None:
            return False
        if any(ip.version == net.version and ip in net for net in self.networks):
            return True
        if self.globs:
            text = str(ip)
            if any(fnmatch.fnmatchcase(text, g) for g in self.globs):
                return True
        if self.hosts and resolver is not None:
            for name, bits in self.hosts:
                try:
                    addresses = resolver.addresses(name)
                except DnsTempError as exc:
                    log.warning("cannot resolve %s in an address list: %s", name, exc)
                    continue
                for addr in addresses:
                    host = parse_ip(addr)
                    if host is None or host.version != ip.version:
                        continue
                    prefix = bits if bits is not None else host.max_prefixlen
                    if ip in ipaddress.ip_network(f"{host}/{prefix}", strict=False):
                        return True
        return False


@dataclass(frozen=True)
class ConnectionSettings:
    internal_connect: IpList = field(default_factory=lambda: IpList(()))
    trusted_relay: IpList = field(default_factory=lambda: IpList(()))


@dataclass(frozen=True)
class Connection:
    """One SMTP client connection, as classified at connect."""

    hostname: str  # PTR name, or "[ip]" when there is none
    ip: str | None  # None for a local (unix) or unknown client
    port: int
    internal: bool
    trusted: bool
    local: bool  # loopback or a non-IP client (submitted on this host)
    dyn: bool  # no PTR, or a dynamic-looking one
    receiver: str  # our name: macro j
    daemon_port: str | None  # macro {daemon_port}, when the MTA sends it

    @property
    def ptr_missing(self) -> bool:
        return self.hostname.startswith("[")

    def describe(self) -> str:
        """The classes for the connect log line."""
        parts = ["INTERNAL" if self.internal else "EXTERNAL"]
        if self.trusted:
            parts.append("TRUSTED")
        if self.dyn:
            parts.append("DYN")
        return " ".join(parts)


def classify(
    settings: ConnectionSettings,
    hostname: str,
    family: int,
    hostaddr: object,
    receiver: str,
    daemon_port: str | None,
    resolver: Resolver | None = None,
    is_dynamic: Callable[[str, str], bool] | None = None,
) -> Connection:
    """Classify a connection from what ``connect()`` received."""
    ip: IPAddress | None = None
    port = 0
    if family in (socket.AF_INET, socket.AF_INET6) and isinstance(hostaddr, tuple):
        ip = parse_ip(str(hostaddr[0]))
        port = int(hostaddr[1]) if len(hostaddr) > 1 else 0
    local = ip is None or ip.is_loopback
    internal = settings.internal_connect.matches(ip, resolver)
    trusted = settings.trusted_relay.matches(ip, resolver)
    # sendmail writes "[ip]" when there is no PTR; Postfix writes "unknown".
    ptr_missing = not hostname or hostname.startswith("[") or hostname == "unknown"
    dyn = False
    text = str(ip) if ip is not None else None
    if text is not None and not local:
        dyn = ptr_missing or bool(is_dynamic and is_dynamic(hostname, text))
    if ptr_missing and text is not None:
        hostname = f"[{text}]"
    return Connection(hostname or "localhost", text, port,
                      internal, trusted, local, dyn, receiver, daemon_port)
