"""Demerits per connection and the IP bans they lead to (SPEC §4 Reputation).

Each offence adds points; when a connection's total exceeds
``max_demerits`` (unset: never) its IP is banned for ``ban_days`` through
the state store, so every worker and every MX sharing the store refuses it
from the next connection on.  Trusted relays, internal and local clients are
never banned.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Protocol

from ..interfaces import BanStore, Clock
from ..log import escape
from .connection import Connection
from .greylist import StoreUnavailable

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
        try:
            self.store.ban_ip(conn.ip, until, reason)
        except StoreUnavailable:
            return False  # the store logged it; the next offence tries again
        self.banned = True
        log.info("BANNED IP: %s (%d demerits, last: %s)", conn.ip, self.points, escape(reason))
        return True


# A host name such as mail2.x.example or smtp.x.example: ban every name below x.example.
_HOST_LABEL = re.compile(r"^(mail|smtp|mx|mta|out|outbound|relay|mo)[-_]?\d*$")


def ban_key(domain: str) -> str:
    """The ban for ``domain``: ``*.parent`` when its first label names a
    mail host (``mail2.``, ``smtp.``, ``mx3.``), else the domain itself."""
    d = domain.lower().rstrip(".")
    first, _, rest = d.partition(".")
    if rest.count(".") >= 1 and _HOST_LABEL.match(first):
        return "*." + rest
    return d


class ListStore(BanStore, Protocol):
    def list_add(self, kind: str, entry: str, until: float) -> None: ...


def ban_sender(store: ListStore, now: float, settings: ReputationSettings, mailbox: str,
               domain: str, providers: frozenset[str], reason: str) -> str:
    """Ban the (authenticated) sender: its domain for ``ban_days``, or, for
    a big ``email_providers`` domain shared by millions, only the mailbox on
    the blacklist.  What was banned (for the log); "" when the store is down."""
    d = domain.lower()
    try:
        if d in providers or any(d.endswith("." + p) for p in providers):
            store.list_add("blacklist", mailbox.lower(), now + settings.ban_days * DAY)
            log.info("BLACKLIST: %s (%s)", escape(mailbox), escape(reason))
            return mailbox
        key = ban_key(d)
        store.ban_domain(key, now + settings.ban_days * DAY, reason)
    except StoreUnavailable:
        return ""
    log.info("BAN DOMAIN: %s (%s)", escape(key), escape(reason))
    return key
