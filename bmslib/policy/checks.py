"""Connect, HELO, MAIL FROM and RCPT checks (SPEC §4: connect / helo,
envfrom, envrcpt), each a function over the connection snapshot that
returns a :class:`~bmslib.policy.decision.Decision`.

Reply texts are ours; the log texts keep the original's words where admins
grep for them (``zombie PC at IP sending MAIL FROM ADDR``).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..interfaces import Access
from .address import Address
from .connection import Connection, IpList, parse_ip
from .decision import CONTINUE, AccessKind, Decision

SUBMISSION_PORT = "587"
ROBOTS = ("mailer-daemon", "auto-notify")


@dataclass(frozen=True)
class CheckSettings:
    internal_domains: tuple[str, ...] = ()  # glob patterns, matched case-insensitively
    internal_mta: IpList = field(default_factory=lambda: IpList(()))
    hello_blacklist: frozenset[str] = frozenset()  # lowercased names
    private_relay: frozenset[str] = frozenset()  # recipient domains, lowercased
    # check_user: domain -> allowed local parts (lowercased unless
    # case_sensitive_localpart); missing domain = no check
    check_user: Mapping[str, frozenset[str]] = field(default_factory=dict)
    case_sensitive_localpart: bool = False


def is_internal_domain(settings: CheckSettings, domain: str) -> bool:
    d = domain.lower()
    return any(fnmatch.fnmatchcase(d, p.lower()) for p in settings.internal_domains)


# --- connect -----------------------------------------------------------------------

def check_banned_ip(conn: Connection, banned: bool) -> Decision:
    """A banned client is refused at DATA (delayed, so every recipient is logged);
    the submission port is exempt (its users authenticate)."""
    if not banned or conn.daemon_port == SUBMISSION_PORT:
        return CONTINUE
    return Decision.reject("BANNED IP", "Banned for repeated policy violations.",
                           log=f"BANNED IP {conn.ip}", delay=True)


def check_ptr(conn: Connection) -> Decision:
    """A PTR name no honest host has: ``localhost`` for a remote address, or ``.``."""
    name = conn.hostname.lower().rstrip(".")
    if conn.local or conn.ptr_missing:
        return CONTINUE
    if name in ("localhost", "localhost.localdomain", ""):
        return Decision.reject("PTR", f'"{conn.hostname}" is not a reasonable PTR name.',
                               log=f"PTR is {conn.hostname}", delay=True)
    return CONTINUE


# --- helo ---------------------------------------------------------------------------

def check_helo(conn: Connection, settings: CheckSettings, helo: str) -> Decision:
    """Outsiders may not HELO with an IP address or address literal, nor with
    one of our own names (``hello_blacklist``)."""
    if conn.internal or conn.trusted or conn.local:
        return CONTINUE
    if parse_ip(helo) is not None:
        return Decision.reject("numeric hello name", "Hello name cannot be an IP address.",
                               log=f"numeric hello name: {helo}")
    if helo.lower().rstrip(".") in settings.hello_blacklist:
        return Decision.reject("spam from self", f"Your mail server lies: its name is not {helo}.",
                               log=f"spam from self: HELO {helo}")
    return CONTINUE


def check_missing_helo(helo: str | None) -> Decision:
    if helo:
        return CONTINUE
    return Decision.reject("missing HELO", "It's polite to say HELO first.")


# --- mail from ------------------------------------------------------------------------

@dataclass(frozen=True)
class AuthResult:
    decision: Decision
    policy: AccessKind | None  # None: no SMTP-Auth entry (the zombie rule applies)

    @property
    def whitelist(self) -> bool:
        return self.policy is AccessKind.WHITELIST


def check_smtp_auth(conn: Connection, access: Access, user: str, sender: Address) -> AuthResult:
    """``SMTP-Auth:user@domain`` access keys decide which MAIL FROM domains an
    authenticated user may use; an unqualified sender counts as our own name."""
    domain = sender.domain or conn.receiver.lower()
    value = access.lookup("SMTP-Auth", f"{user}@{domain}")
    if value is None:
        return AuthResult(CONTINUE, None)
    if value.kind in (AccessKind.OK, AccessKind.WHITELIST):
        return AuthResult(CONTINUE, value.kind)
    if value.kind is AccessKind.ERROR:
        return AuthResult(value.error_decision("unauthorized user",
                                               f"unauthorized user {user} MAIL FROM {sender}"),
                          value.kind)
    return AuthResult(
        Decision.reject("unauthorized user",
                        f"SMTP user {user} is not authorized to use MAIL FROM {sender.raw}.",
                        log=f"unauthorized user {user} MAIL FROM {sender}"),
        value.kind)


def check_zombie(conn: Connection, settings: CheckSettings, sender: Address) -> Decision:
    """An internal PC (not a trusted relay, not this host) whose MAIL FROM
    domain is none of ours is a zombie (or badly configured): refuse at MAIL."""
    if (not settings.internal_domains or conn.trusted or conn.local
            or not sender.qualified or is_internal_domain(settings, sender.domain)):
        return CONTINUE
    return Decision.reject(
        "zombie PC",
        f"Your PC is using an unauthorized MAIL FROM domain ({sender.domain}).",
        "It is either badly misconfigured or controlled by someone else.",
        log=f"zombie PC at {conn.ip} sending MAIL FROM {sender}")


def check_internal_mta(conn: Connection, settings: CheckSettings, sender: Address) -> Decision:
    """Only the listed internal MTAs may send bounces (``<>``)."""
    if not settings.internal_mta or not sender.null or conn.trusted or conn.local:
        return CONTINUE
    if settings.internal_mta.matches(parse_ip(conn.ip)):
        return CONTINUE
    return Decision.reject(
        "pretend MTA", "Your PC is not a mail server and should not send",
        "delivery status notifications or return receipts.",
        log=f"pretend MTA at {conn.ip} sending MAIL FROM <>")


# --- rcpt to --------------------------------------------------------------------------

def check_recipient(conn: Connection, settings: CheckSettings, rcpt: Address) -> Decision:
    local = rcpt.local.lower()
    if local in ROBOTS:
        return Decision.reject("robot recipient", f"{rcpt.local} does not accept mail.",
                               log=f"robot recipient {rcpt}")
    if not (conn.internal or conn.trusted) and rcpt.domain in settings.private_relay:
        return Decision.reject("RELAY", f"Unauthorized relay for {rcpt.domain}.",
                               log=f"RELAY: {rcpt}")
    users = settings.check_user.get(rcpt.domain)
    wanted = rcpt.local if settings.case_sensitive_localpart else local
    if users is not None and wanted not in users:
        return Decision.reject("unknown user", "No such user here.", xcode="5.1.1",
                               log=f"RCPT TO: {rcpt} unknown user")
    return CONTINUE
