"""A zone-table resolver for the SPF unit tests (``SpfResolver``: the
``Resolver`` protocol plus ``a()``/``aaaa()``), and connection builders."""

from __future__ import annotations

from typing import cast

from bmslib.interfaces import DnsTempError
from bmslib.policy.connection import Connection

CLIENT = "192.0.2.66"
CLIENT6 = "2001:db8::66"


class ZoneResolver:
    """``records[(name, TYPE)]``; names in ``broken`` raise DnsTempError for
    every type.  Every question is recorded in ``asked``."""

    def __init__(self, records: dict[tuple[str, str], list[object]],
                 broken: frozenset[str] = frozenset()) -> None:
        self.records = {(n.lower(), t): v for (n, t), v in records.items()}
        self.broken = broken
        self.asked: list[tuple[str, str]] = []

    def _get(self, name: str, qtype: str) -> list[object]:
        n = name.lower().rstrip(".")
        self.asked.append((n, qtype))
        if n in self.broken:
            raise DnsTempError(f"{n} {qtype}: timeout")
        return list(self.records.get((n, qtype), []))

    def a(self, name: str) -> list[str]:
        return [str(x) for x in self._get(name, "A")]

    def aaaa(self, name: str) -> list[str]:
        return [str(x) for x in self._get(name, "AAAA")]

    def addresses(self, name: str) -> list[str]:
        return self.a(name) + self.aaaa(name)

    def ptr(self, ip: str) -> list[str]:
        return [str(x) for x in self._get(ip, "PTR")]

    def mx(self, domain: str) -> list[tuple[int, str]]:
        return [cast(tuple[int, str], x) for x in self._get(domain, "MX")]

    def txt(self, name: str) -> list[bytes]:
        return [x.encode() if isinstance(x, str) else cast(bytes, x)
                for x in self._get(name, "TXT")]


def zone() -> ZoneResolver:
    """One domain per SPF result for :data:`CLIENT` (and :data:`CLIENT6`)."""
    other = "ip4:198.51.100.1"
    r: dict[tuple[str, str], list[object]] = {
        ("pass.example", "TXT"): [f"v=spf1 ip4:{CLIENT} ip6:{CLIENT6} -all"],
        ("fail.example", "TXT"): [f"v=spf1 {other} -all"],
        ("softfail.example", "TXT"): [f"v=spf1 {other} ~all"],
        ("neutral.example", "TXT"): [f"v=spf1 {other} ?all"],
        ("exp.example", "TXT"): [f"v=spf1 {other} -all exp=why.exp.example"],
        ("why.exp.example", "TXT"): ["Go away\r\nX-Injected: yes"],
        ("none.example", "TXT"): ["hello world"],
        ("none.example", "MX"): [(10, "mx.none.example")],
        ("permerror.example", "TXT"): ["v=spf1 ip4:192.0.2.300 -all"],
        ("laxpass.example", "TXT"): [f"v=spf1 ip4:{CLIENT} moo -all"],
        ("temperror.example", "TXT"): ["v=spf1 include:broken.example -all"],
        ("guess.example", "A"): [CLIENT],
        ("helo.example", "A"): [CLIENT],
        ("helo6.example", "AAAA"): [CLIENT6],
        ("helospf.example", "TXT"): [f"v=spf1 ip4:{CLIENT} -all"],
        ("helospf.sub.example", "TXT"): [f"v=spf1 ip4:{CLIENT} -all"],
        ("helofail.example", "TXT"): [f"v=spf1 {other} -all"],
        ("heloneutral.example", "TXT"): [f"v=spf1 {other} ?all"],
        ("badhelo.example", "A"): ["198.51.100.9"],
        ("fwd.example", "TXT"): [f"v=spf1 ip4:{CLIENT} -all"],
        ("nofwd.example", "TXT"): [f"v=spf1 {other} -all"],
        ("deleg.example._spf.local.example", "TXT"): [f"v=spf1 ip4:{CLIENT} -all"],
        ("mail.sub.guess.example", "A"): ["198.51.100.7"],
        ("sub.guess.example", "TXT"): ["v=spf1 ip4:198.51.100.8 ?all"],
    }
    return ZoneResolver(r, broken=frozenset({"broken.example", "dnsdown.example"}))


def connection(ip: str | None = CLIENT, *, hostname: str = "client.pass.example",
               dyn: bool = False, receiver: str = "mx.example.test") -> Connection:
    return Connection(hostname=hostname, ip=ip, port=25, internal=False, trusted=False,
                      local=False, dyn=dyn, receiver=receiver, daemon_port=None)
