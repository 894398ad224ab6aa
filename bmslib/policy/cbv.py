"""Call-back verification (CBV) and templated DSN notices (SPEC §4 "CBV and DSN").

``CBV`` asks the sender's own mail server whether it would take a bounce:
``MAIL FROM:<>``, ``RCPT TO:<sender>``, QUIT.  ``DSN`` goes one step further
and sends a templated notice (:mod:`bmslib.policy.dsn`) from the null sender
to the MAIL FROM address; its delivery is the verification.

Outcome (:class:`CbvResult`, :meth:`CbvResult.decision`):

* 2xx to RCPT (or to the end of DATA) → ACCEPTED → CONTINUE;
* 5xx to MAIL, RCPT or DATA, or a null MX (RFC 7505) → REFUSED →
  ``550 5.7.1 CBV: <code> <text>`` (RFC 5321 says the null sender must be
  accepted, so refusing it means bounces to this sender cannot be delivered);
* 4xx to MAIL, RCPT or DATA, a DNS temporary error, no MX reachable, or the
  budget spent → TEMPORARY → ``450 4.2.0 CBV: <code> <text>``;
* the null sender, an unqualified or unsendable address → SKIPPED → CONTINUE.

A failure to connect, a greeting or HELO refused, or a dropped connection is
the server's problem, not a verdict on the sender: the next MX is tried.
An MX whose banner names this host is skipped (probing ourselves proves
nothing, and the original's blanket "553 Fraudulent MX" would refuse mail
for domains we are backup MX for while their primary is down); only when
every MX that answered was this host is the result REFUSED with 553: mail
to that sender would come back to us, and we do not accept it for them
(domains we do serve are internal and never probed).

The whole operation, DNS included, is bounded by ``timeout``
(``[milter] cbv_timeout``, 20 s): each SMTP session gets the time that is
left as a hard deadline.  At most :attr:`CbvSettings.max_connections`
connections are made, so a domain listing many (possibly victim) MX hosts
cannot turn one message into a scan.

Results are cached per address (local part compared case-insensitively, so
changing case does not buy a new probe or notice): ACCEPTED for
``success_ttl`` (7 days), REFUSED for ``failure_ttl`` (6 hours), TEMPORARY
for ``tempfail_ttl`` (5 minutes: a burst of messages from one forged sender
makes one probe, while the sender's regular retry, typically after 15 to 30
minutes or more, is probed afresh).  A cached result is answered without any
network traffic, which also limits notices to one per address per period.

Log lines (``CBV: …`` and ``DSN: …``, tags an admin can grep)::

    CBV: a@b.example PLAIN
    CBV: a@b.example Using: /usr/share/bms/templates/fail.txt
    CBV: a@b.example (cached) REFUSED 550 5.1.1 user unknown
    CBV: a@b.example ACCEPTED 250 2.1.5 ok (mx.b.example [192.0.2.1])
    DSN: a@b.example fail.txt sent: 250 2.0.0 queued (mx.b.example [192.0.2.1])
    DSN: a@b.example fail.txt REFUSED 550 5.1.1 user unknown (mx.b.example [192.0.2.1])
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Final, Protocol

from .. import metrics
from ..interfaces import Clock, DnsTempError, Resolver
from ..log import escape
from ..smtpclient import SmtpOutcome, SmtpTransport, mailbox_path, reply_text
from .address import Address
from .decision import Action, Decision
from .dsn import VARIABLES, Template, build_message, load_templates

log = logging.getLogger(__name__)

DAY: Final = 86400.0
HOUR: Final = 3600.0
MIN_ATTEMPT: Final = 0.5  # seconds; less than this left is not worth a connection
# Steps whose answer is the domain's verdict on the address; a refusal
# earlier (greeting, HELO) says something about us, not about the sender.
VERDICT_STEPS: Final = frozenset({"MAIL", "RCPT", "DATA", "message"})


@dataclass(frozen=True)
class CbvSettings:
    hostname: str  # our name (macro j): HELO, self-detection, From: postmaster@
    timeout: float = 20.0  # [milter] cbv_timeout: the whole probe or DSN
    success_ttl: float = 7 * DAY
    failure_ttl: float = 6 * HOUR
    tempfail_ttl: float = 300.0  # 0: temporary failures are not cached
    datadir: str | None = None  # <name>.txt here overrides the shipped template
    max_connections: int = 5  # SMTP connections per verification, over all MXes


class CbvStatus(enum.Enum):
    ACCEPTED = "ACCEPTED"
    REFUSED = "REFUSED"
    TEMPORARY = "TEMPORARY"
    SKIPPED = "SKIPPED"


@dataclass(frozen=True)
class CbvResult:
    """What a verification found.  Plain data, so a persistent cache can store it.

    ``code``/``text`` are the deciding SMTP reply (text already one printable
    line), or our own 450/550/553 and an explanation when no server gave one."""

    status: CbvStatus
    code: int = 0
    text: str = ""
    mx: str = ""  # "host [ip]" of the server that answered, if any
    step: str = ""  # SMTP step of the reply (smtpclient.SmtpOutcome.step)
    template: str = ""  # the template name when a DSN was attempted
    cached: bool = False
    reason: str = ""  # SKIPPED: why not probed

    @property
    def dsn(self) -> bool:
        return bool(self.template)

    def to_dict(self) -> dict[str, str | int]:
        """JSON-ready form, for a persistent :class:`CbvCache` (``cached`` is not kept)."""
        return {"status": self.status.value, "code": self.code, "text": self.text,
                "mx": self.mx, "step": self.step, "template": self.template,
                "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> CbvResult:
        """The inverse of :meth:`to_dict`; raises ValueError for what it did not write."""
        try:
            code = data.get("code", 0)
            if not isinstance(code, int):
                raise ValueError(f"bad code {code!r}")
            text = {k: str(data.get(k, "")) for k in ("text", "mx", "step", "template",
                                                       "reason")}
            return cls(CbvStatus(data["status"]), code, text["text"], text["mx"],
                       text["step"], text["template"], reason=text["reason"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a stored CBV result: {data!r}") from exc

    def decision(self) -> Decision:
        """CONTINUE, ``450 4.2.0 CBV: <code> <text>`` or ``550 5.7.1 CBV: <code> <text>``
        (the pipeline logs it as ``TEMPFAIL: CBV: 450 …`` / ``REJECT: CBV: 550 …``)."""
        reply = f"CBV: {self.code} {self.text}".strip()
        notes = [f"DSN {self.template}"] if self.template else []
        if self.mx:
            notes.append(self.mx)
        if self.cached:
            notes.append("cached")
        log_text = reply + (f" ({', '.join(notes)})" if notes else "")
        if self.status is CbvStatus.TEMPORARY:
            return Decision.tempfail("CBV", reply, code="450", xcode="4.2.0", log=log_text)
        if self.status is CbvStatus.REFUSED:
            return Decision.reject("CBV", reply, code="550", xcode="5.7.1", log=log_text)
        return Decision(Action.CONTINUE, "CBV", log=self.reason or self.status.value)


class CbvCache(Protocol):
    """Where results are kept between messages, shared by every connection
    (and, in the state store, by every worker process).

    ``address`` is the key: ``local@domain`` with both parts lowercased.
    ``get`` returns the stored result while it is younger than the ``ttl``
    (seconds) it was put with, else None; ``put`` replaces any earlier entry,
    and a ``ttl`` of 0 or less stores nothing.  Both must be thread-safe and
    should not raise (a store that fails may answer None).  A persistent
    store can keep :meth:`CbvResult.to_dict` as JSON."""

    def get(self, address: str) -> CbvResult | None: ...

    def put(self, address: str, result: CbvResult, ttl: float) -> None: ...


class MemoryCbvCache:
    """:class:`CbvCache` in process memory: thread-safe, entries expire after
    their ttl, and the least recently used go first beyond ``max_entries``."""

    def __init__(self, clock: Clock, max_entries: int = 10000) -> None:
        self._clock = clock
        self._max = max_entries
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, CbvResult]] = OrderedDict()

    def get(self, address: str) -> CbvResult | None:
        now = self._clock.now()
        with self._lock:
            entry = self._entries.get(address)
            if entry is None:
                return None
            if entry[0] <= now:
                del self._entries[address]
                return None
            self._entries.move_to_end(address)
            return entry[1]

    def put(self, address: str, result: CbvResult, ttl: float) -> None:
        if ttl <= 0:
            return
        expires = self._clock.now() + ttl
        with self._lock:
            self._entries[address] = (expires, result)
            self._entries.move_to_end(address)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class CbvRequestLike(Protocol):
    """The shape of :class:`bmslib.policy.pipeline.CbvRequest`."""

    @property
    def target(self) -> Address: ...

    @property
    def template(self) -> str | None: ...

    @property
    def result(self) -> str: ...


Variables = Mapping[str, "str | Collection[str]"]


class CallbackVerifier:
    """Probes senders and sends DSN notices; see the module docstring.

    Templates are loaded (and checked) here, at construction: a bad template
    raises :class:`bmslib.policy.dsn.TemplateError` at startup.  Calling the
    verifier with a request and the DSN variables returns a Decision, which
    is the pipeline's ``CbvStep``."""

    def __init__(self, settings: CbvSettings, resolver: Resolver, transport: SmtpTransport,
                 clock: Clock, cache: CbvCache | None = None,
                 templates: Mapping[str, Template] | None = None,
                 message_id: Callable[[str], str | None] | None = None) -> None:
        self.settings = settings
        # The Message-ID of a DSN to a mailbox (SRS-signed with [srs], so a
        # reply to it is recognised: bmslib.policy.dsnreply).
        self.message_id = message_id
        self.resolver = resolver
        self.transport = transport
        self.clock = clock
        self.cache: CbvCache = cache if cache is not None else MemoryCbvCache(clock)
        self.templates: Mapping[str, Template] = (
            templates if templates is not None else load_templates(settings.datadir))

    def __call__(self, request: CbvRequestLike, variables: Variables) -> Decision:
        """The pipeline's ``CbvStep``: verify ``request.target`` (a DSN when
        ``request.template`` names a template), answered as a Decision."""
        values = dict(variables)
        if not values.get("result"):
            values["result"] = request.result
        # Our name as the MTA gave it for this connection (macro j).
        receiver = values.get("receiver")
        return self.verify(request.target, request.template, values,
                           hostname=receiver if isinstance(receiver, str) and receiver
                           else None).decision()

    def check(self, sender: Address, template: str | None = None,
              variables: Variables | None = None) -> Decision:
        return self.verify(sender, template, variables).decision()

    def verify(self, sender: Address, template: str | None = None,
               variables: Variables | None = None, hostname: str | None = None
               ) -> CbvResult:
        """Probe ``sender``'s MX (``template`` None), or send it the named
        DSN template filled with ``variables``, as ``hostname`` (HELO, From:
        postmaster@; default :attr:`CbvSettings.hostname`).  Never raises for
        anything the network or DNS does."""
        me = hostname or self.settings.hostname
        addr = escape(sender.mailbox or sender.raw)
        skip = _not_probed(sender)
        if skip:
            log.info("CBV: %s not probed: %s", addr, skip)
            return CbvResult(CbvStatus.SKIPPED, reason=skip)
        path = mailbox_path(sender.local, sender.domain)  # checked by _not_probed
        key = f"{sender.local.lower()}@{sender.domain}"
        cached = self.cache.get(key)
        if cached is not None:
            log.info("CBV: %s (cached) %s %d %s", addr, cached.status.value, cached.code,
                     cached.text)
            return replace(cached, cached=True)
        tmpl = self.templates.get(template) if template else None
        message: bytes | None = None
        if tmpl is not None:
            log.info("CBV: %s Using: %s", addr, escape(tmpl.path))
            try:
                message = self._message(tmpl, sender, path, variables or {}, me)
            except Exception:  # a datadir template the email package cannot take
                log.exception("DSN: %s cannot build %s: plain CBV instead", addr,
                              escape(tmpl.filename))
                tmpl = None
        elif template:
            log.info("CBV: %s PLAIN (no template %s)", addr, escape(template))
        else:
            log.info("CBV: %s PLAIN", addr)
        try:
            result = self._run(sender.domain, path, message, me)
        except Exception:  # a bug, or a transport/resolver breaking its contract
            log.exception("CBV: %s failed", addr)
            return _temporary("internal error during verification")  # not cached
        if tmpl is not None:
            result = replace(result, template=tmpl.name)
        self._log(addr, tmpl, result)
        ttl = {CbvStatus.ACCEPTED: self.settings.success_ttl,
               CbvStatus.REFUSED: self.settings.failure_ttl,
               CbvStatus.TEMPORARY: self.settings.tempfail_ttl}.get(result.status, 0.0)
        if ttl > 0:
            self.cache.put(key, result, ttl)
        return result

    # --- helpers -------------------------------------------------------------------

    def _message(self, tmpl: Template, sender: Address, path: str,
                 variables: Variables, me: str) -> bytes:
        values: dict[str, str | Collection[str]] = {
            "sender": sender.mailbox, "sender_domain": sender.domain, "receiver": me,
        }
        values.update({k: v for k, v in variables.items()
                       if k in VARIABLES and (v or k not in values)})
        if not values.get("perm_error"):  # pyspf's explanation is in Received-SPF too
            values["perm_error"] = values.get("spf_result", "")
        mid = self.message_id(sender.mailbox) if self.message_id is not None else None
        return build_message(tmpl, values, to=path, receiver=me,
                             now=self.clock.now(), message_id=mid)

    def _log(self, addr: str, tmpl: Template | None, r: CbvResult) -> None:
        where = f" ({r.mx})" if r.mx else ""
        if tmpl is None:
            log.info("CBV: %s %s %d %s%s", addr, r.status.value, r.code, r.text, where)
        elif r.status is CbvStatus.ACCEPTED:
            log.info("DSN: %s %s sent: %d %s%s", addr, escape(tmpl.filename), r.code, r.text,
                     where)
        else:
            log.info("DSN: %s %s %s %d %s%s", addr, escape(tmpl.filename), r.status.value,
                     r.code, r.text, where)

    def _run(self, domain: str, path: str, message: bytes | None, me: str) -> CbvResult:
        s = self.settings
        deadline = self.clock.now() + s.timeout
        try:
            mxs = self.resolver.mx(domain)
        except DnsTempError:
            return _temporary(f"DNS temporary failure looking up MX for {domain}")
        hosts = [host.rstrip(".").lower() for _pref, host in sorted(mxs, key=lambda m: m[0])]
        if hosts and all(not h for h in hosts):  # MX 0 "." (RFC 7505)
            return CbvResult(CbvStatus.REFUSED, 550, f"{domain} does not accept mail (null MX)",
                             step="MX")
        if not hosts:  # RFC 5321 5.1: the domain itself is the implicit MX
            hosts = [domain]
        connections = 0
        last: CbvResult | None = None  # why the last server gave no verdict
        ourselves = 0  # MXes whose banner named this host
        stopped = ""  # why not every address was tried
        for host in filter(None, hosts):
            if self.clock.now() >= deadline:
                stopped = "budget"
                break
            try:
                ips = self.resolver.addresses(host)
            except DnsTempError:
                last = last or _temporary(f"DNS temporary failure looking up {host}")
                continue
            for ip in filter(_usable, ips):
                left = deadline - self.clock.now()
                if left < MIN_ATTEMPT:
                    stopped = "budget"
                elif connections >= s.max_connections:
                    stopped = "connections"
                if stopped:
                    break
                connections += 1
                outcome = self._session(ip, path, message, left, me)
                where = f"{host} [{ip}]"
                if outcome.self_banner:
                    log.info("CBV: MX %s is this host (banner %s): skipped", escape(where),
                             outcome.text)
                    ourselves += 1
                elif outcome.timed_out:
                    return _temporary(f"no answer from {where} within the {s.timeout:g}s "
                                      f"budget", mx=where, step=outcome.step)
                elif outcome.ok:
                    return CbvResult(CbvStatus.ACCEPTED, outcome.code, outcome.text, where,
                                     outcome.step)
                elif outcome.step in VERDICT_STEPS and outcome.code >= 400:
                    status = CbvStatus.REFUSED if outcome.code >= 500 else CbvStatus.TEMPORARY
                    return CbvResult(status, outcome.code, outcome.text, where, outcome.step)
                else:  # no verdict from this server (connection, greeting, HELO): next one
                    last = _no_verdict(outcome, where)
            if stopped:
                break
        if last is not None:
            return last
        if stopped == "budget":
            return _temporary(f"no MX of {domain} answered within the {s.timeout:g}s budget")
        if stopped == "connections":
            return _temporary(f"no answer from the MX of {domain} "
                              f"in {s.max_connections} connections")
        if ourselves:
            return CbvResult(CbvStatus.REFUSED, 553,
                             f"the MX of {domain} is this host, which does not accept "
                             "mail for it", step="banner")
        return _temporary(f"no usable address for any MX of {domain}")

    def _session(self, ip: str, path: str, message: bytes | None,
                 left: float, helo: str) -> SmtpOutcome:
        started = time.perf_counter()
        if message is None:
            outcome = self.transport.probe(ip, helo=helo, recipient=path, timeout=left)
        else:
            outcome = self.transport.deliver(ip, helo=helo, recipient=path, message=message,
                                             timeout=left)
        metrics.cbv(time.perf_counter() - started, _metric_outcome(outcome),
                    "probe" if message is None else "dsn")
        return outcome


def _metric_outcome(o: SmtpOutcome) -> str:
    """The outcome label of an SMTP session in ``bms_cbv_duration_seconds``."""
    if o.self_banner:
        return "self"
    if o.timed_out:
        return "timeout"
    if o.ok:
        return "accepted"
    if 500 <= o.code < 600:
        return "refused"
    if 400 <= o.code < 500:
        return "tempfail"
    return "error"  # no reply at all: connection refused or reset


def _temporary(text: str, *, code: int = 450, mx: str = "", step: str = "") -> CbvResult:
    return CbvResult(CbvStatus.TEMPORARY, code, reply_text(text), mx, step)


def _no_verdict(outcome: SmtpOutcome, where: str) -> CbvResult:
    """A server that could not be asked: a temporary failure that names it."""
    if 400 <= outcome.code < 500:  # 421 at the greeting: keep the server's code
        return CbvResult(CbvStatus.TEMPORARY, outcome.code, outcome.text, where, outcome.step)
    said = f"{outcome.code} {outcome.text}" if outcome.code else outcome.text
    return _temporary(f"{where} {outcome.step}: {said}", mx=where, step=outcome.step)


def _not_probed(sender: Address) -> str:
    """Why ``sender`` is not probed, or ""."""
    if sender.null:
        return "null sender"
    if not sender.qualified:
        return "unqualified sender"
    if sender.domain.startswith("["):
        return "address literal"
    try:
        mailbox_path(sender.local, sender.domain)
    except ValueError as exc:
        return f"address not usable in SMTP: {exc}"
    return ""


def _usable(ip: str) -> bool:
    """An address an MX may have: not unspecified, multicast or reserved.
    (Loopback and private addresses are allowed: test beds and intranets.)"""
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return a.is_loopback or not (a.is_unspecified or a.is_multicast or a.is_reserved
                                 or a.is_link_local)
