"""The bms policy pipeline for one SMTP connection, stage by stage (SPEC §4).

:class:`SmtpSession` receives the events of a connection (connect, HELO,
MAIL, RCPT, DATA, headers, end of message) and answers each with a
:class:`~bmslib.policy.decision.Decision`; at end of message it also returns
the header edits to make.  It logs one line per decision, with the reason
tag.  It knows nothing of the milter API: ``bms.py`` maps callbacks onto it,
and the tests drive it directly with fakes.

Delayed rejects (SPEC §4a): a decision with ``delay=True`` is answered at
DATA (at the latest at end of message), so every recipient still gets
logged.  One made at connect or HELO (banned IP, absurd PTR) belongs to the
connection: a second MAIL FROM cannot clear it; only SMTP AUTH cancels it.
One made at MAIL or RCPT belongs to the message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import getaddresses
from typing import IO, Protocol, TypeVar

from .. import metrics
from ..interfaces import (
    NOT_LISTED,
    Access,
    Archive,
    Clock,
    ReportSink,
    Resolver,
    SenderStanding,
    StateStore,
)
from ..log import escape
from ..logfields import decision
from ..safetext import envelope_address, host_name
from ..spool import MessageSpool
from . import arc, arglimit, checks, dkimstep, dmarcreport, dmarcstep, dnsbl, dsnreply
from .address import Address, parse_address
from .arc import ArcResult, ArcSettings
from .checks import CheckSettings
from .connection import Connection, ConnectionSettings, classify
from .decision import CONTINUE, Action, Decision
from .dkim import DkimResult, DkimSettings, authres_items
from .dmarc import DmarcOutcome
from .edits import EomResult, HeaderEdit, apply_edits
from .greylist import GreylistSettings, StoreUnavailable, decide, decide_unavailable, greylist_key
from .headertext import header_safe, pvalue
from .message import Envelope, MessageSettings, Saver, check_headers, finish
from .reputation import DAY, Demerits, ReputationSettings, ban_sender
from .srs import Srs

log = logging.getLogger("bms")

Macro = Callable[[str], "str | None"]
T = TypeVar("T")


# --- what the SPF and CBV steps give the pipeline ------------------------------------

@dataclass(frozen=True)
class CbvRequest:
    """A call-back verification (``template`` None) or a templated DSN to send
    at end of message, to ``target`` (the MAIL FROM, or postmaster@HELO)."""

    target: Address
    template: str | None
    result: str  # the SPF result that asked for it (DSN template variable)


@dataclass(frozen=True)
class SpfResult:
    decision: Decision
    received_spf: str | None = None  # value of our Received-SPF header
    authres: tuple[str, ...] = ()  # Authentication-Results items ("spf=pass smtp.mailfrom=…")
    cbv: CbvRequest | None = None
    whitelist: bool = False
    blacklist: bool = False
    ban: bool = False  # BAN: +3 demerits
    result: str = ""  # the official result, for the DSN variables


class SpfStep(Protocol):
    def __call__(self, conn: Connection, helo: str, sender: Address) -> SpfResult: ...


class DmarcStep(Protocol):
    def __call__(self, from_domains: Sequence[str], spf_result: str, spf_domain: str,
                 dkim_results: Sequence[DkimResult]) -> DmarcOutcome: ...


class CbvStep(Protocol):
    def __call__(self, request: CbvRequest, variables: Mapping[str, str]) -> Decision: ...


@dataclass(frozen=True)
class PolicySettings:
    connection: ConnectionSettings = field(default_factory=ConnectionSettings)
    checks: CheckSettings = field(default_factory=CheckSettings)
    reputation: ReputationSettings = field(default_factory=ReputationSettings)
    dry_run: bool = False
    log_headers: bool = False
    supply_sender: bool = False  # [spf] supply_sender
    message: MessageSettings = field(default_factory=MessageSettings)
    greylist: GreylistSettings | None = None  # None: off
    dkim: DkimSettings | None = None  # signing key and domain (verification is always on)
    arc: ArcSettings | None = None  # [arc] sealing key and domain (verification is always on)
    trusted_arc_sealers: frozenset[str] = frozenset()  # [dmarc] trusted_arc_sealers
    email_providers: frozenset[str] = frozenset()  # ban the mailbox, never the domain
    auto_whitelist_days: float = 60.0  # recipients of internal senders
    blacklist_days: float = 30.0
    max_argument_length: int = 2048  # HELO, MAIL and RCPT arguments (0: no cap)


@dataclass(frozen=True)
class Services:
    """The outside world, wired in bms.py."""

    access: Access
    store: StateStore
    clock: Clock
    resolver: Resolver | None = None
    spf: SpfStep | None = None
    cbv: CbvStep | None = None
    is_dynamic: Callable[[str, str], bool] | None = None
    archive: Archive | None = None  # [wiretap] archive
    save: Saver | None = None  # saves the original of a defanged message, returns the path
    srs: Srs | None = None  # [srs] with a secret
    dmarc: DmarcStep | None = None  # [dmarc] enabled
    dnsbl: dnsbl.Blocklists | None = None  # [dnsbl] zones / rhsbl
    reports: ReportSink | None = None  # DMARC report counts; None: each to the store at once


# Demerits per offence (the original's weights).
DEMERITS = {"spam from self": 4, "BAN": 3, "unknown user": 1, "policy": 1, "content": 1,
            "HELO in transaction": 2, "blacklist": 2}


def pvalue_address(mailbox: str) -> str:
    """``<mailbox>`` as a header value (printable ASCII only)."""
    return f"<{header_safe(mailbox, 500)}>"


class SmtpSession:
    """Policy state for one SMTP connection; one object per milter connection."""

    def __init__(self, settings: PolicySettings, services: Services) -> None:
        self.settings = settings
        self.services = services
        self.conn: Connection | None = None
        self.demerits: Demerits | None = None
        self.helo_name: str | None = None
        self.conn_pending: Decision | None = None  # delayed reject of the connection
        self.ip_ban_due = False  # the client's IP ban is read with the first MAIL FROM
        self._reset_message()

    def _reset_message(self) -> None:
        self.sender: Address | None = None
        self.auth_user: str | None = None
        self.recipients: list[Address] = []
        self.msg_pending: Decision | None = None
        self.spf: SpfResult | None = None
        self.whitelist = False
        self.subject = ""
        self.author_domains: list[str] = []  # domains of the From: and Sender: fields
        self.has_sender_header = False
        self.header_counts: dict[str, int] = {}
        self.forged: list[tuple[str, int]] = []
        self.in_transaction = False
        self.data_seen = False
        self.auto_whitelisted = False  # sender in the auto-whitelist: no greylisting
        self.srs_reversed: list[tuple[str, str]] = []  # (recipient as given, original)
        self.valid_bounce = False  # a bounce to a valid SRS address
        self.dkim: dkimstep.DkimOutcome | None = None
        self.spf_deferred = False  # an SPF reject waits for the ARC chain
        self.from_domains: list[str] = []  # domains of the From: field(s), for DMARC
        self.dmarc: DmarcOutcome | None = None
        self.arc: ArcResult | None = None
        self.quarantine = ""  # why the message goes to quarantine (DNSBL, DMARC)
        self._close_spool()

    def _close_spool(self) -> None:
        spool: MessageSpool | None = getattr(self, "spool", None)
        if spool is not None:
            spool.close()
        self.spool: MessageSpool | None = None

    def _spool(self) -> MessageSpool:
        if self.spool is None:
            self.spool = MessageSpool(self.settings.message.tempdir)
        return self.spool

    # --- answering -------------------------------------------------------------------

    def _apply(self, d: Decision, delayable: bool = False) -> Decision:
        """Log and return the answer for ``d``, or remember it when it may wait."""
        if not d.final:
            return CONTINUE
        if d.delay and delayable:
            if self.conn is not None and self.sender is None:
                self.conn_pending = self.conn_pending or d
            else:
                self.msg_pending = self.msg_pending or d
            return CONTINUE
        return self._answer(d)

    def _answer(self, d: Decision) -> Decision:
        verb = d.action.value
        text = escape(d.log or d.tag)
        if self.settings.dry_run and d.action in (Action.REJECT, Action.TEMPFAIL,
                                                   Action.DISCARD):
            log.info("DRYRUN %s: %s", verb, text, extra=decision("dryrun_" + verb, d.tag))
            metrics.decision("dryrun_" + verb.lower(), d.tag)
            return CONTINUE
        log.info("%s: %s", verb, text, extra=decision(verb, d.tag))
        metrics.decision(verb.lower(), d.tag)
        return d

    def _offense(self, kind: str, reason: str) -> None:
        if self.demerits is not None:
            self.demerits.add(DEMERITS.get(kind, 1), reason)

    def _pending(self) -> Decision | None:
        return self.conn_pending or self.msg_pending

    # --- events ----------------------------------------------------------------------

    def connect(self, hostname: str, family: int, hostaddr: object, macro: Macro) -> Decision:
        sv = self.services
        receiver = host_name(macro("j") or "")  # it goes into our headers and HELO
        conn = classify(self.settings.connection, hostname, family, hostaddr, receiver,
                        macro("{daemon_port}"), sv.resolver, sv.is_dynamic)
        self.conn = conn
        self.demerits = Demerits(self.settings.reputation, sv.store, sv.clock, conn)
        where = f"({conn.ip}, {conn.port})" if conn.ip else "local"
        log.info("connect from %s at %s %s", escape(conn.hostname), where, conn.describe())
        # A banned IP is refused at DATA like the PTR check's reject; the store is
        # read once per message, at MAIL FROM, so its ban is looked up there.
        self.ip_ban_due = conn.ip is not None
        return self._apply(checks.check_ptr(conn), delayable=True)

    def _ip_ban(self, conn: Connection, ip: str, banned: bool) -> None:
        """The connection's IP ban, a reject delayed to DATA (before an SMTP
        AUTH in this MAIL FROM cancels it); it goes before the PTR and HELO
        checks' delayed rejects, as it did when it was read at connect."""
        d = checks.check_banned_ip(conn, banned)
        if d.final:
            self._log_ban("ip", ip)
            self.conn_pending = d

    def _log_ban(self, kind: str, name: str) -> None:
        """Which ban refuses this client or sender domain, and why (the daemon's
        own or one added with ``bms ban add``)."""
        ban = self._query(lambda now: self.services.store.ban_in_force(kind, name, now), None)
        if ban is not None:
            log.info("BAN IN FORCE: %s %s (%s)", kind, escape(ban.key),
                     escape(ban.reason or "no reason given"))

    def helo(self, name: str) -> Decision:
        conn = self._conn()
        log.info("hello from %s", escape(name))
        d = arglimit.check_length("HELO", (name,), self.settings.max_argument_length)
        if d.final:
            return self._answer(d)
        if self.in_transaction:
            self._offense("HELO in transaction", "HELO after MAIL FROM")
        self.helo_name = name
        d = checks.check_helo(conn, self.settings.checks, name)
        if d.tag == "spam from self":
            self._offense("spam from self", "HELO with our name")
        return self._apply(d)

    def mail(self, sender_raw: str, params: Sequence[str], macro: Macro) -> Decision:
        conn = self._conn()
        self._reset_message()
        self.in_transaction = True
        log.info("mail from %s", escape(" ".join((sender_raw, *params))))
        d = arglimit.check_length("MAIL FROM", (sender_raw, *params),
                                  self.settings.max_argument_length)
        if d.final:
            return self._answer(d)
        sender = parse_address(sender_raw)
        self.sender = sender
        user = macro("{auth_authen}")
        # The domain ban, for outside mail the blacklist and auto-whitelist, and
        # with the connection's first MAIL FROM the IP ban: one read of the store.
        lists = not (conn.internal or user) and sender.qualified
        ip = conn.ip if self.ip_ban_due else None
        self.ip_ban_due = False
        store = self.services.store
        standing = self._query(lambda now: store.standing(
            sender.domain if sender.qualified else None, sender.mailbox if lists else None,
            ip, now), NOT_LISTED) if sender.qualified or ip is not None else NOT_LISTED
        if ip is not None:
            self._ip_ban(conn, ip, standing.ip_banned)
        internal = conn.internal
        auth_policy = None
        if user:
            self.auth_user = user
            internal = True
            log.info("SMTP AUTH: %s", escape(user))
            auth = checks.check_smtp_auth(conn, self.services.access, user, sender)
            if auth.decision.final:
                return self._apply(auth.decision)
            auth_policy = auth.policy
            self.whitelist = auth.whitelist
            if self.conn_pending is not None:
                log.info("REJECT CANCELED: %s (SMTP AUTH %s)",
                         escape(self.conn_pending.log), escape(user))
                self.conn_pending = None
        st = self.settings.checks
        if internal and auth_policy is None:
            d = checks.check_zombie(conn, st, sender)
            if d.final:
                return self._apply(d)
        if internal:
            d = checks.check_internal_mta(conn, st, sender)
            if d.final:
                return self._apply(d)
        d = checks.check_missing_helo(self.helo_name)
        if d.final:
            return self._apply(d)
        if standing.banned:
            self._log_ban("domain", sender.domain)
            return self._apply(Decision.reject(
                "banned domain", f"Mail from {sender.domain} is not accepted here.",
                log=f"banned domain {sender.domain}", delay=True), delayable=True)
        if (not internal and not conn.trusted and conn.ip is not None
                and self.services.spf is not None):
            d = self._spf(conn, sender)
            if d.final:
                return d
        if lists:
            d = self._lists(conn, sender, standing)
            if d.final:
                return d
        if not internal:
            return self._blocklists(conn, sender)
        return CONTINUE

    def _blocklists(self, conn: Connection, sender: Address) -> Decision:
        """The client IP, HELO name and MAIL FROM domain against the DNS
        blocklists (a delayed reject); not for trusted or whitelisted clients."""
        lists = self.services.dnsbl
        if (lists is None or conn.trusted or conn.local or self.whitelist
                or self._pending() is not None):
            return CONTINUE
        listing = conn.ip and lists.check_ip(conn.ip)
        listing = listing or lists.check_domain(self.helo_name or "", "HELO")
        if not listing and sender.qualified:
            listing = lists.check_domain(sender.domain, "MAIL FROM")
        return self._listed(listing) if listing else CONTINUE

    def _listed(self, listing: dnsbl.Listing, delayable: bool = True) -> Decision:
        d, quarantine = dnsbl.verdict(listing, self.services.access)
        if quarantine:
            self.quarantine = self.quarantine or quarantine
        if d.action is Action.REJECT:
            self._offense("policy", d.tag)
        return self._apply(d, delayable=delayable)

    def _query(self, op: Callable[[float], T], default: T) -> T:
        """A read of the state store; when the store is down (the store logs
        that, once per interval) reputation data is ``default``: mail goes on."""
        try:
            return op(self.services.clock.now())
        except StoreUnavailable:
            return default

    def _lists(self, conn: Connection, sender: Address, standing: SenderStanding) -> Decision:
        """The blacklist (delayed reject, +2 demerits) and the auto-whitelist
        (no greylisting; whitelisted when SPF passed or the relay is trusted)."""
        mailbox = sender.mailbox
        if standing.blacklisted:
            self._offense("blacklist", f"blacklisted sender {mailbox}")
            return self._apply(Decision.reject(
                "blacklist", "Sender email local blacklist.", log=f"blacklist {mailbox}",
                delay=True), delayable=True)
        if standing.whitelisted:
            self.auto_whitelisted = True
            if conn.trusted or (self.spf is not None and self.spf.result == "pass"):
                self.whitelist = True
                log.info("WHITELIST %s", escape(mailbox))
            else:
                log.info("PROBATION %s", escape(mailbox))
        return CONTINUE

    def _spf(self, conn: Connection, sender: Address) -> Decision:
        assert self.services.spf is not None
        result = self.services.spf(conn, self.helo_name or "", sender)
        self.spf = result
        if (result.result == "none" and sender.qualified
                and checks.is_internal_domain(self.settings.checks, sender.domain)):
            # An outsider using one of our domains, which publishes no SPF
            # (with SPF, the SPF policy decides).
            self._offense("spam from self", f"MAIL FROM {sender.domain} from outside")
            return self._apply(Decision.reject(
                "spam from self", "I hate talking to myself!",
                f"Mail from {sender.domain} comes from our own servers, not from "
                f"{conn.ip}.", log=f"spam from self {sender.domain}", delay=True),
                delayable=True)
        if result.whitelist:
            self.whitelist = True
        if result.ban:
            self._offense("BAN", f"BAN policy for {sender}")
            self._ban_sender(f"BAN policy for {sender.mailbox}")
        elif result.decision.action is Action.REJECT:
            self._offense("policy", result.decision.tag)
        return self._apply(result.decision, delayable=True)

    def rcpt(self, rcpt_raw: str, params: Sequence[str]) -> Decision:
        conn = self._conn()
        log.info("rcpt to %s", escape(" ".join((rcpt_raw, *params))))
        d = arglimit.check_length("RCPT TO", (rcpt_raw, *params),
                                  self.settings.max_argument_length)
        if d.final:
            return self._answer(d)
        rcpt = parse_address(rcpt_raw)
        d = checks.check_recipient(conn, self.settings.checks, rcpt)
        if d.final:
            if d.tag == "unknown user":
                self._offense("unknown user", f"unknown user {rcpt}")
            return self._apply(d)
        d = self._srs_rcpt(conn, rcpt_raw, rcpt)
        if d.final:
            return d
        self.recipients.append(rcpt)
        return self._greylist(conn, rcpt)

    def _external(self, conn: Connection) -> bool:
        return not (conn.internal or conn.trusted or conn.local or self.auth_user)

    def _srs_rcpt(self, conn: Connection, rcpt_raw: str, rcpt: Address) -> Decision:
        """A bounce to one of our SRS domains: a valid SRS address is reversed
        (at end of message); a forged or unsigned one is refused when it comes
        from outside."""
        srs = self.services.srs
        if srs is None or self.sender is None:
            return CONTINUE
        verdict = srs.check_bounce_rcpt(self.sender, rcpt)
        if verdict.reversed is not None:
            log.info("SRS: %s is %s", escape(rcpt.mailbox), escape(verdict.reversed))
            self.srs_reversed.append((rcpt_raw, verdict.reversed))
            self.valid_bounce = True
            return CONTINUE
        if not verdict.decision.final or not self._external(conn):
            return CONTINUE
        if verdict.decision.delay and self.auto_whitelisted:
            log.info("WHITELIST: DSN from %s", escape(self.sender.mailbox))
            return CONTINUE
        return self._apply(verdict.decision, delayable=True)

    def _greylist(self, conn: Connection, rcpt: Address) -> Decision:
        """Greylist (origin, sender, recipient) of outside mail (SPEC §4 envrcpt)."""
        settings = self.settings.greylist
        sender = self.sender
        if (settings is None or sender is None or sender.null or conn.ip is None
                or not self._external(conn) or self.whitelist or self.auto_whitelisted
                or self.valid_bounce or self._pending() is not None):
            return CONTINUE
        spf = self.spf
        domain = sender.domain if spf is not None and spf.result == "pass" else None
        key = greylist_key(conn.ip, domain, sender.mailbox, rcpt.mailbox)
        try:
            verdict = self.services.store.greylist(key, self.services.clock.now(), settings)
        except StoreUnavailable as exc:
            return self._apply(decide_unavailable(exc))
        if verdict.passed and verdict.count == 1:
            log.info("GREYLIST PASSED: %s", escape(" ".join(key)))
        return self._apply(decide(verdict, key))

    def data(self) -> Decision:
        self.data_seen = True
        pending = self._pending()
        if pending is not None and self._arc_may_rescue(pending):
            self.spf_deferred = True  # answered at end of message, after ARC
            return CONTINUE
        return self._answer(pending) if pending is not None else CONTINUE

    def _arc_may_rescue(self, pending: Decision) -> bool:
        """An SPF reject of the message, with trusted ARC sealers configured:
        a forwarded message may still be let through by its ARC chain."""
        return (bool(self.settings.trusted_arc_sealers) and self.conn_pending is None
                and pending is self.msg_pending and pending.action is Action.REJECT
                and pending.tag.startswith("SPF ") and self.services.resolver is not None)

    def header(self, name: str, value: str) -> Decision:
        self._spool().add_header(name, value)
        key = name.lower()
        n = self.header_counts.get(key, 0) + 1
        self.header_counts[key] = n
        if self.settings.log_headers:
            log.info("%s: %s", escape(name), escape(value))
        if key == "subject" and not self.subject:
            self.subject = value
        elif key in ("from", "sender"):
            self.has_sender_header = self.has_sender_header or key == "sender"
            domains = [addr.rpartition("@")[2].lower().rstrip(">").strip()
                       for _, addr in getaddresses([value]) if "@" in addr]
            self.author_domains.extend(domains)
            if key == "from":
                self.from_domains.extend(domains or [""])
        elif key in ("received-spf", "authentication-results") and self._claims_us(key, value):
            self.forged.append((name, n))
        return CONTINUE

    def _envelope(self) -> Envelope:
        conn = self._conn()
        return Envelope(self.sender or parse_address("<>"), tuple(self.recipients),
                        external=not conn.internal and not self.auth_user,
                        whitelisted=self.whitelist, dry_run=self.settings.dry_run)

    def eoh(self) -> Decision:
        lists, conn = self.services.dnsbl, self._conn()
        if (lists is not None and self._external(conn) and not self.whitelist
                and len(set(self.from_domains)) == 1 and self._pending() is None):
            listing = lists.check_domain(self.from_domains[0], "From:")
            if listing is not None:
                d = self._listed(listing, delayable=False)  # after DATA: answer now
                if d.final:
                    return d
        d = check_headers(self.settings.message, self._envelope(), self._spool().headers)
        if d.final:
            self._offense("content", d.tag)
            if d.tag == "from words" and not self.settings.dry_run:
                self._ban_sender(d.log or d.tag)
        return self._apply(d)

    def _ban_sender(self, reason: str) -> None:
        """Ban the sender's domain (or blacklist the mailbox at a big
        provider), only when SPF authenticated the domain: a forged sender
        must not get an innocent domain banned."""
        sender = self.sender
        if (sender is None or not sender.qualified or self.spf is None
                or self.spf.result != "pass"):
            return
        ban_sender(self.services.store, self.services.clock.now(), self.settings.reputation,
                   sender.mailbox, sender.domain, self.settings.email_providers, reason)

    def body(self, chunk: bytes) -> None:
        self._spool().add_body(chunk)

    def _claims_us(self, key: str, value: str) -> bool:
        receiver = self._conn().receiver.lower()
        v = value.lower()
        if key == "authentication-results":
            authserv = v.split(";", 1)[0].strip().split()
            return bool(authserv) and authserv[0] == receiver
        return f"receiver={receiver}" in v.replace(" ", "")

    def eom(self, macro: Macro) -> EomResult:
        try:
            return self._eom(macro)
        finally:  # the result's body, if any, is a file of its own
            self._close_spool()

    def _eom(self, macro: Macro) -> EomResult:
        pending = self._pending()
        if pending is not None and not self.data_seen:  # no DATA (protocol < 4): answer now
            answer = self._answer(pending)
            if answer.final:
                return EomResult(answer)
        # (With DATA seen, a pending reject was answered there: only a dry run, or an
        # SPF reject that a trusted ARC sealer may rescue, gets here.)
        if self.spf_deferred and pending is not None:
            self._arc_verify(self._spool())
            sealer = self._trusted_sealer()
            if not sealer:
                answer = self._answer(pending)
                if answer.final:
                    return EomResult(answer)
            else:
                log.info("%s: let through: forwarded, ARC pass sealed by trusted %s",
                         escape(pending.tag), escape(sealer))
                self.msg_pending = None
        spf = self.spf
        # An auto-whitelisted sender needs no call-back, unless SPF found fault.
        probation = self.auto_whitelisted and (spf is None or spf.result not in
                                               ("permerror", "softfail"))
        if spf is not None and spf.cbv is not None and self.services.cbv is not None \
                and not self.whitelist and not probation:
            d = self.services.cbv(spf.cbv, self._dsn_variables(spf))
            if d.final:
                return EomResult(self._answer(d))
        spool = self._spool()
        d = self._dsn_reply(spool)
        if d.final:
            return EomResult(d)
        d = self._dkim_verify(spool)
        if d.final:
            return EomResult(d)
        self._arc_verify(spool)
        d, quarantine = self._dmarc()
        if d.final:
            return EomResult(d)
        quarantine = self.quarantine or quarantine
        if self.quarantine and self.settings.dry_run:
            log.info("DRYRUN QUARANTINE: %s", escape(self.quarantine))
            quarantine = ""
        elif self.quarantine:
            log.info("QUARANTINE: %s", escape(self.quarantine))
        content = finish(self.settings.message, self._envelope(), spool, self.services.save)
        if content.decision.final:
            answer = self._answer(content.decision)
            if answer.final:
                return EomResult(answer)
        edits: list[HeaderEdit] = list(content.edits)
        # Forged headers claiming our name go; delete from the last occurrence
        # so the indexes of the earlier ones stay right.
        for name, index in sorted(self.forged, key=lambda f: (f[0].lower(), -f[1])):
            log.info("removing forged %s header #%d", escape(name), index)
            edits.append(HeaderEdit("delete", name, index=index))
        if spf is not None and spf.received_spf:
            edits.append(HeaderEdit("insert", "Received-SPF", spf.received_spf))
        edits.extend(self._supplied_sender())
        authres = self._authres(spf)
        if authres:
            edits.append(HeaderEdit("insert", "Authentication-Results", authres))
        add_rcpts, del_rcpts = self._srs_recipients(content.add_rcpts, content.del_rcpts)
        new_sender = self._srs_sender()
        sig = self._dkim_sign(spool, edits, content.body)
        if sig is not None:
            edits.append(HeaderEdit("insert", "DKIM-Signature", sig, index=0))
        if authres:
            edits.extend(self._arc_seal(spool, edits, content.body))
        result = EomResult(CONTINUE, tuple(edits), content.body, add_rcpts, del_rcpts,
                           new_sender, quarantine)
        d = self._archive(result)
        if d.final:
            answer = self._answer(d)
            if answer.final:
                return EomResult(answer)
        queue_id = macro("i") or "-"
        log.info("ACCEPT: %d recipient%s, queue id %s", len(self.recipients),
                 "" if len(self.recipients) == 1 else "s", escape(queue_id),
                 extra=decision("accept", "ok"))
        metrics.decision("accept", "ok")
        self.in_transaction = False
        self._whitelist_recipients()
        return result

    # --- DKIM, SRS and the auto-whitelist at end of message ------------------------------

    def _dsn_reply(self, spool: MessageSpool) -> Decision:
        """A reply to one of our DSNs: the sender we notified was forged;
        blacklist it and discard the reply."""
        srs, sender = self.services.srs, self.sender
        if (srs is None or sender is None or not self._external(self._conn())
                or not dsnreply.is_candidate(sender.null, [r.mailbox for r in self.recipients],
                                             spool.headers)):
            return CONTINUE
        target = dsnreply.find_dsn_target(srs, spool.headers, spool.body)
        if target is None:
            return CONTINUE
        if not self.settings.dry_run:
            until = self.services.clock.now() + self.settings.blacklist_days * DAY
            try:
                self.services.store.list_add("blacklist", target, until)
            except StoreUnavailable:
                pass  # logged by the store
            log.info("BLACKLIST: %s (a reply to our DSN)", escape(target))
        return self._answer(Decision(Action.DISCARD, "DSN reply",
                                     log=f"DSN reply about {target}"))

    def _dkim_verify(self, spool: MessageSpool) -> Decision:
        """Verify the DKIM signatures of outside mail; the answer when a
        ``DKIM-…`` access key refuses it."""
        resolver = self.services.resolver
        if resolver is None or not self._external(self._conn()):
            return CONTINUE
        outcome = dkimstep.verify(spool.headers, spool.body, resolver.txt,
                                  self.services.access, self.whitelist)
        self.dkim = outcome
        self.whitelist = self.whitelist or outcome.whitelist
        return self._answer(outcome.decision) if outcome.decision.final else CONTINUE

    def _arc_verify(self, spool: MessageSpool) -> None:
        """The ARC chain of outside mail (``arc=`` in Authentication-Results)."""
        resolver = self.services.resolver
        if resolver is None or not self._external(self._conn()) or self.arc is not None:
            return
        if not arc.has_arc(spool.headers):
            self.arc = ArcResult("none")
            return
        message = dkimstep.message_bytes(spool.headers, spool.body, dkimstep.VERIFY_MAX)
        if message is None:
            self.arc = ArcResult("none", reason="message too large to verify")
            return
        self.arc = arc.verify(message, resolver.txt)
        r = self.arc
        log.info("ARC: %s%s%s", r.result, escape(f" i={r.instances} d={r.sealer}")
                 if r.sealer else "", escape(f" ({r.reason})") if r.reason else "")

    def _trusted_sealer(self) -> str:
        r = self.arc
        if r is not None and r.result == "pass" and r.sealer in self.settings.trusted_arc_sealers:
            return r.sealer
        return ""

    def _dmarc(self) -> tuple[Decision, str]:
        """DMARC for outside mail, after SPF and DKIM: the answer when the
        policy refuses it, and the quarantine reason ("" for none)."""
        check, sender = self.services.dmarc, self.sender
        if check is None or sender is None or not self._external(self._conn()):
            return CONTINUE, ""
        spf = self.spf
        spf_domain = sender.domain if sender.qualified else (self.helo_name or "")
        dkim = self.dkim.results if self.dkim is not None else ()
        outcome = check(self.from_domains, spf.result if spf is not None else "none",
                        spf_domain, dkim)
        self.dmarc = outcome
        sealer = self._trusted_sealer()
        v = dmarcstep.verdict(outcome, self.services.access, self.whitelist, sealer)
        answer, quarantine = CONTINUE, v.quarantine
        if v.decision.final:
            if v.decision.action is Action.REJECT:
                self._offense("policy", v.decision.tag)
            answer = self._answer(v.decision)
        elif v.quarantine and self.settings.dry_run:
            log.info("DRYRUN QUARANTINE: %s", escape(v.quarantine))
            quarantine = ""
        elif v.quarantine:
            log.info("QUARANTINE: %s", escape(v.quarantine))
            metrics.decision("quarantine", v.tag)
        self._count_report(outcome, answer, quarantine, sealer, spf_domain, dkim)
        return answer, quarantine

    def _count_report(self, outcome: DmarcOutcome, answer: Decision, quarantine: str,
                      sealer: str, spf_domain: str, dkim: Sequence[DkimResult]) -> None:
        """The aggregate-report row of this message, counted in the state store
        (a store that is down loses the count, never the mail)."""
        disposition = ("reject" if answer.action is Action.REJECT else
                       "quarantine" if quarantine else "none")
        reason = ""
        if outcome.result == "fail":
            if sealer:
                reason = "trusted_forwarder"
            elif disposition != outcome.disposition:
                reason = "local_policy"
            elif outcome.sampled_out:
                reason = "sampled_out"
        spf = self.spf.result if self.spf is not None else "none"
        row = dmarcreport.report_row(outcome, self._conn().ip or "", disposition, reason,
                                     spf_domain, spf, dkim)
        if row is None:
            return
        day = int(self.services.clock.now() // dmarcreport.DAY)
        if self.services.reports is not None:
            self.services.reports.count(day, row.key())
            return
        try:
            self.services.store.report_count(day, row.key())
        except StoreUnavailable:
            pass  # logged by the store

    def _dkim_sign(self, spool: MessageSpool, edits: Sequence[HeaderEdit],
                   body: IO[bytes] | None) -> str | None:
        """The signature of internal mail, over the message as it will leave."""
        sender = self.sender
        conn = self._conn()
        if sender is None or not (conn.internal or self.auth_user) or not \
                dkimstep.should_sign(self.settings.dkim, sender.domain, sender.null):
            return None
        assert self.settings.dkim is not None
        return dkimstep.signature(apply_edits(spool.headers, edits), body or spool.body,
                                  self.settings.dkim)

    def _arc_seal(self, spool: MessageSpool, edits: Sequence[HeaderEdit],
                  body: IO[bytes] | None) -> list[HeaderEdit]:
        """``[arc]``: our ARC set over the message as it will leave (after
        every other edit, with our Authentication-Results); sealing never
        blocks mail."""
        settings = self.settings.arc
        if settings is None or not settings.privkey:
            return []
        message = dkimstep.message_bytes(apply_edits(spool.headers, edits), body or spool.body)
        assert message is not None
        try:
            fields = arc.seal(message, settings, self._conn().receiver)
        except arc.ArcError as exc:
            log.warning("ARC: not sealed: %s", escape(str(exc)))
            return []
        log.info("ARC: sealed d=%s s=%s", settings.domain, escape(settings.selector))
        # Inserted at the top one by one: the last inserted ends up first.
        return [HeaderEdit("insert", name, value, index=0) for name, value in reversed(fields)]

    def _srs_recipients(self, add: tuple[str, ...], delete: tuple[str, ...]
                        ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Valid SRS recipients replaced by the addresses they stand for."""
        if not self.srs_reversed or self.settings.dry_run:
            return add, delete
        pairs = []
        for raw, orig in self.srs_reversed:
            path = envelope_address(f"<{orig}>")
            if path is None:  # a signed address we would no longer make
                log.info("SRS: %s stays: %s is not a sendable address", escape(raw),
                         escape(orig))
            else:
                pairs.append((raw, path))
        return (add + tuple(path for _, path in pairs),
                delete + tuple(raw for raw, _ in pairs))

    def _srs_sender(self) -> str | None:
        """The SRS0 envelope sender for mail relayed from a non-local sender
        to outside domains (``chgfrom``)."""
        srs = self.services.srs
        if srs is None or self.sender is None or self.settings.dry_run:
            return None
        new = srs.rewrite_sender(self.sender, self.recipients,
                                 self.settings.checks.internal_domains)
        if new is None:
            return None
        path = envelope_address(f"<{new}>")
        if path is None:  # CR, LF, ESC ... in the sender: no SMTP path can carry them
            log.info("SRS: envelope sender %s not rewritten: not a sendable address",
                     escape(self.sender.mailbox))
            return None
        log.info("SRS: envelope sender %s is now %s", escape(self.sender.mailbox),
                 escape(new))
        return path

    def _whitelist_recipients(self) -> None:
        """Outside recipients of mail from our own users go on the
        auto-whitelist: their replies skip greylisting and call-backs."""
        conn = self._conn()
        sender = self.sender
        if (sender is None or sender.null or self.settings.dry_run
                or not (conn.internal or self.auth_user)
                or not checks.is_internal_domain(self.settings.checks, sender.domain)):
            return
        until = self.services.clock.now() + self.settings.auto_whitelist_days * DAY
        for rcpt in self.recipients:
            if rcpt.qualified and not checks.is_internal_domain(self.settings.checks,
                                                                 rcpt.domain):
                try:
                    self.services.store.list_add("whitelist", rcpt.mailbox, until)
                except StoreUnavailable:
                    return  # the store logged it; the mail goes on

    def _archive(self, result: EomResult) -> Decision:
        """Append the message as it will be delivered to the archive; a
        failure is a temporary one (the MTA keeps the message and retries)."""
        archive = self.services.archive
        if archive is None:
            return CONTINUE
        spool = self._spool()
        headers = apply_edits(spool.headers, result.edits)
        body = result.body or spool.body
        sender = self.sender.mailbox if self.sender is not None else ""
        try:
            where = archive.append(sender, headers, body, self.services.clock.now())
        except Exception as exc:  # ArchiveError, and any I/O surprise: never lose mail
            return Decision.tempfail(
                "archive", "Cannot archive your message now; try again later.",
                log=f"archive: {exc}")
        log.info("ARCHIVE: %s", escape(where))
        return CONTINUE

    def abort(self) -> None:
        self._reset_message()

    def close(self) -> None:
        self._close_spool()
        if self.conn is not None:  # the closing line, however the MTA ended the session
            log.info("close: session from %s at %s ended", escape(self.conn.hostname),
                     self.conn.ip or "localhost")

    # --- helpers -------------------------------------------------------------------

    def _conn(self) -> Connection:
        if self.conn is None:  # the MTA skipped CONNECT: an unknown local client
            self.connect("localhost", 0, None, lambda _n: None)
        assert self.conn is not None
        return self.conn

    def _supplied_sender(self) -> list[HeaderEdit]:
        """``supply_sender``: outside mail whose From:/Sender: names no domain
        of the MAIL FROM gets ``Sender: <MAIL FROM>``, so the reader sees who
        really sent it (SPF vouched for the MAIL FROM, not for From:)."""
        sender = self.sender
        conn = self._conn()
        if (not self.settings.supply_sender or sender is None or not sender.qualified
                or conn.internal or conn.local or self.auth_user):
            return []
        domain = sender.domain.lower()
        if any(domain == d or domain.endswith("." + d) for d in self.author_domains if d):
            return []
        log.info("NOTE: From: domain%s %s is not %s", "s" if len(self.author_domains) != 1
                 else "", escape(", ".join(self.author_domains) or "(none)"), escape(domain))
        if self.has_sender_header:
            return []
        log.info("NOTE: Supplying MFROM as Sender")
        return [HeaderEdit("insert", "Sender", pvalue_address(sender.mailbox), index=-1)]

    def _authres(self, spf: SpfResult | None) -> str:
        conn = self._conn()
        items: list[str] = []
        if conn.ip is not None and not conn.local:
            iprev = "fail" if conn.ptr_missing else "pass"
            items.append(f"iprev={iprev} policy.iprev={conn.ip}")
        if self.auth_user:
            items.append(f"auth=pass smtp.auth={pvalue(self.auth_user)}")
        if spf is not None:
            items.extend(spf.authres)
        if self.dkim is not None and self.dkim.results:
            items.extend(authres_items(self.dkim.results))
        if self.dmarc is not None:
            items.append(self.dmarc.authres())
        if self.arc is not None:
            items.append(self.arc.authres())
        if not items:
            return ""
        return conn.receiver + ";\n\t" + ";\n\t".join(items)

    def _dsn_variables(self, spf: SpfResult) -> dict[str, str]:
        conn = self._conn()
        sender = self.sender or parse_address("<>")
        return {
            "sender": sender.mailbox, "receiver": conn.receiver,
            "sender_domain": sender.domain, "heloname": self.helo_name or "",
            "connectip": conn.ip or "", "result": spf.result, "perm_error": "",
            "rcpt": "\t".join(r.mailbox for r in self.recipients),
            "subject": self.subject, "spf_result": spf.received_spf or "",
        }
