"""Demerits per connection and the IP bans they lead to (SPEC §4 Reputation).

Each offence adds points; when a connection's total exceeds
``max_demerits`` (unset: never) its IP is banned for ``ban_days`` through
the state store, so every worker and every MX sharing the store refuses it
from the next connection on.  Trusted relays, internal and local clients are
never banned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..interfaces import BanStore, Clock
from ..log import escape
from .connection import Connection

log = logging.getLogger(__name__)

DAY = 86400.0


@dataclass(frozen=True)
class ReputationSettings:
    max_demerits: int | None = None
    ban_days: float = 7.0


class Demerits:
    def __init__(self, settings: ReputationSettings, store: BanStore, clock: Clock,
                 conn: Connection) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.conn = conn
        self.points = 0
        self.banned = False

    def add(self, points: int, reason: str) -> bool:
        """Add ``points`` for ``reason``; True when this banned the client."""
        self.points += points
        limit = self.settings.max_demerits
        conn = self.conn
        if (self.banned or limit is None or self.points <= limit or conn.ip is None
                or conn.trusted or conn.internal or conn.local):
            return False
        until = self.clock.now() + self.settings.ban_days * DAY
        self.store.ban_ip(conn.ip, until, reason)
        self.banned = True
        log.info("BANNED IP: %s (%d demerits, last: %s)", conn.ip, self.points, escape(reason))
        return True
