"""Fakes of the outside-world interfaces (Milter.interfaces), shared by the tests."""

from __future__ import annotations

from Milter.interfaces import DnsTempError
from Milter.policy.decision import AccessValue


class FakeResolver:
    def __init__(self, hosts: dict[str, list[str]], broken: frozenset[str] = frozenset()
                 ) -> None:
        self.hosts = hosts
        self.broken = broken
        self.asked: list[str] = []

    def addresses(self, name: str) -> list[str]:
        self.asked.append(name)
        if name in self.broken:
            raise DnsTempError(name)
        return self.hosts.get(name, [])

    def ptr(self, ip: str) -> list[str]:
        return []

    def mx(self, domain: str) -> list[tuple[int, str]]:
        return []

    def txt(self, name: str) -> list[bytes]:
        return []


class FakeAccess:
    def __init__(self, table: dict[tuple[str, str], AccessValue]) -> None:
        self.table = table
        self.asked: list[tuple[str, str]] = []

    def lookup(self, tag: str, subject: str) -> AccessValue | None:
        self.asked.append((tag, subject))
        return self.table.get((tag, subject))


class FakeStore:
    def __init__(self) -> None:
        self.bans: list[tuple[str, float, str]] = []

    def ban_ip(self, ip: str, until: float, reason: str) -> None:
        self.bans.append((ip, until, reason))

    def ip_banned(self, ip: str, now: float) -> bool:
        return any(b[0] == ip and b[1] > now for b in self.bans)

    def ban_domain(self, domain: str, until: float, reason: str) -> None:
        raise AssertionError

    def domain_banned(self, domain: str, now: float) -> bool:
        return False


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t
