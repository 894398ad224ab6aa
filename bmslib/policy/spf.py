"""SPF at MAIL FROM (SPEC §4 "SPF", §4a "SPF-None"): pyspf through our
resolver, the access-file policy for the result, and our headers.

For an external, untrusted client (the pipeline decides that) one call of
:class:`SpfPolicy` does this:

1. **Official result** of the MAIL FROM (pyspf, lax mode; ``<>`` is checked
   as ``postmaster@HELO``, an unqualified sender as ``local@HELO``, as pyspf
   does).  It goes into ``Received-SPF`` (pyspf's text, ``receiver=`` our
   name) and into the ``Authentication-Results`` item
   ``spf=<result> smtp.mailfrom=<sender>`` (``smtp.helo=`` for ``<>``;
   RFC 8601).  Headers never show anything but the official result; the
   effective one is added as ``x-bestguess=`` when it differs.
2. **Effective result**, which selects the access key:

   * ``permerror`` with a lax result (pyspf's ``perm_error.ext``: the record
     has e.g. an unknown mechanism but would otherwise give ``pass``): the
     lax result, and a ``permerror`` DSN tells the sender to fix the record;
   * not ``pass`` and a ``trusted_forwarder`` passes SPF (its record, or
     ``v=spf1 a mx`` when it has none) for the client: ``pass`` for
     ``postmaster@<forwarder>``, whitelisted (``TRUSTED_FORWARDER:`` log);
   * ``none`` with ``best_guess``: the result of ``v=spf1 a/24 mx/24 ptr``
     (without ``ptr`` for a DYN client), promoted to ``pass`` when the HELO
     is valid and is the sender domain or below it; a guess of ``none``
     (invalid name) counts as ``neutral``;
   * **3 strikes**: a DYN client (no usable PTR), official ``none``, no
     effective ``pass`` and no valid HELO selects ``SPF-None`` with its own
     defaults and the ``strike3`` DSN template.  A valid HELO is one whose
     own SPF check passes or whose A/AAAA records include the client IP.

3. **Policy**: ``access.lookup("SPF-<Result>", subject)`` (full address,
   ``user@``, domain, parents, ``SPF-<Result>:``), else the built-in default
   (:func:`default_policy`); the value becomes the :class:`SpfResult`.
   ``temperror`` is special: REJECT-type values TEMPFAIL (451 4.3.0, never
   delayed), OK/CBV/DSN/WHITELIST go on as ``none`` would, never as a pass.
4. **HELO policy** (when the effective result is not ``pass`` and the sender
   is not ``<>``): a HELO whose own SPF result is fail, softfail or neutral
   is looked up as ``HELO-<Result>:<helo>`` (default REJECT), with the
   ``heloerror`` DSN to postmaster@HELO for DSN.

Every decision is logged once, e.g.
``SPF: softfail policy CBV for a@b.example (key SPF-Softfail, default)``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import spf as pyspf

from ..interfaces import Access, DnsTempError
from ..log import escape
from .address import Address, parse_address
from .connection import Connection
from .decision import CONTINUE, AccessKind, AccessValue, Action, Decision
from .headertext import header_safe, pvalue
from .pipeline import CbvRequest, SpfResult
from .spfquery import ResolverQuery, SpfResolver

log = logging.getLogger("bms")

RESULTS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")
KEYS = {"pass": "SPF-Pass", "fail": "SPF-Fail", "softfail": "SPF-Softfail",
        "neutral": "SPF-Neutral", "none": "SPF-None", "permerror": "SPF-PermError",
        "temperror": "SPF-TempError"}
HELO_KEYS = {"fail": "HELO-Fail", "softfail": "HELO-Softfail", "neutral": "HELO-Neutral"}

GUESS = "v=spf1 a/24 mx/24 ptr"  # pyspf.DEFAULT_SPF
GUESS_NOPTR = "v=spf1 a/24 mx/24"  # for DYN clients: their PTR proves nothing
GUESS_FORWARDER = "v=spf1 a mx"

Clock = Callable[[], float]
DomainFlag = bool | tuple[str, ...]


@dataclass(frozen=True)
class SpfSettings:
    """``[spf]`` options that shape the SPF policy."""

    # reject_neutral, accept_softfail and accept_fail are sender-domain lists
    # as in the original's pymilter.cfg (a domain covers its subdomains);
    # True means every domain.
    best_guess: bool = False
    reject_noptr: bool = False  # 3 strikes: REJECT instead of CBV
    reject_neutral: DomainFlag = ()  # neutral (and softfail) default REJECT
    accept_softfail: DomainFlag = ()  # softfail default OK
    accept_fail: DomainFlag = ()  # fail default CBV instead of REJECT
    delegate: str | None = None  # <domain>._spf.<delegate> for domains without SPF
    trusted_forwarder: tuple[str, ...] = ()  # their SPF pass counts as ours
    receiver: str | None = None  # receiver= in Received-SPF (default: macro j)
    query_time: float = 20.0  # seconds for all SPF lookups of one MAIL FROM

    def __post_init__(self) -> None:
        if self.query_time <= 0:
            raise ValueError("the SPF query time must be positive")


@dataclass(frozen=True)
class Policy:
    """An access value and where it came from (for the log line)."""

    key: str
    value: AccessValue
    source: str  # "access" or "default"


def default_policy(settings: SpfSettings, result: str, domain: str = "",
                   strike3: bool = False) -> AccessKind:
    """The built-in policy for an effective result (no access entry)::

        pass       OK
        fail       REJECT (CBV when the domain is in accept_fail)
        softfail   CBV (OK when in accept_softfail, else REJECT when in reject_neutral)
        neutral    OK (REJECT when the domain is in reject_neutral)
        none       OK; 3 strikes: CBV with best_guess, REJECT with reject_noptr
        permerror  REJECT (550 5.5.2)
        temperror  TEMPFAIL (451 4.3.0)
    """
    s = settings
    if result == "pass":
        return AccessKind.OK
    if result == "fail":
        if _applies(s.accept_fail, domain):
            return AccessKind.CBV
        return AccessKind.REJECT
    if result == "softfail":
        if _applies(s.accept_softfail, domain):
            return AccessKind.OK
        return AccessKind.REJECT if _applies(s.reject_neutral, domain) else AccessKind.CBV
    if result == "neutral":
        return AccessKind.REJECT if _applies(s.reject_neutral, domain) else AccessKind.OK
    if result == "none":
        if strike3 and s.reject_noptr:
            return AccessKind.REJECT
        return AccessKind.CBV if strike3 and s.best_guess else AccessKind.OK
    if result == "temperror":
        return AccessKind.TEMPFAIL
    return AccessKind.REJECT  # permerror, and anything pyspf may add


def _applies(flag: DomainFlag, domain: str) -> bool:
    if isinstance(flag, bool):
        return flag
    d = domain.lower()
    return any(d == x.lower().strip(".") or d.endswith("." + x.lower().strip("."))
               for x in flag if x.strip("."))


_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


def _is_hostname(name: str) -> bool:
    """A name that could be a host's: dotted, not an address literal."""
    n = name.strip().rstrip(".")
    if "." not in n or n.startswith("[") or not n.isascii():
        return False
    try:
        ipaddress.ip_address(n)
    except ValueError:
        return all(0 < len(label) < 64 for label in n.split("."))
    return False


@dataclass
class _Helo:
    """What is known about the HELO name, computed once per call."""

    result: str | None = None  # its own SPF result
    valid: bool | None = None


class SpfPolicy:
    """The SPF step of the pipeline (``bmslib.policy.pipeline.SpfStep``)."""

    def __init__(self, settings: SpfSettings, resolver: SpfResolver, access: Access, *,
                 clock: Clock = time.monotonic) -> None:
        self.settings = settings
        self.resolver = resolver
        self.access = access
        self.clock = clock

    # ------------------------------------------------------------------ the step

    def __call__(self, conn: Connection, helo: str, sender: Address) -> SpfResult:
        if conn.ip is None:
            return SpfResult(CONTINUE)
        deadline = self.clock() + self.settings.query_time
        receiver = self.settings.receiver or conn.receiver
        helo = helo.strip()
        q = self._query(conn.ip, sender, helo, receiver, deadline)
        official, _code, expl = self._check(q, None)
        ident = self._identity(q, sender, helo)
        authres = self._authres(official, q, sender, helo)
        extra: dict[str, str] = {}
        hinfo = _Helo()
        effective, subject, key_result = official, ident, official
        strike3 = whitelist = lax = False
        forwarder = ""

        if official == "temperror":
            return self._temperror(conn, q, ident, expl, receiver, authres, extra)
        if official == "permerror" and q.perm_error is not None and q.perm_error.ext:
            effective = key_result = str(q.perm_error.ext[0])
            lax = effective != "permerror"
        if effective != "pass" and self.settings.trusted_forwarder:
            fwd = self._forwarder(conn.ip, helo, receiver, deadline)
            if fwd:
                forwarder, effective, key_result = fwd, "pass", "pass"
                subject, whitelist = f"postmaster@{fwd}", True
                log.info("TRUSTED_FORWARDER: %s", escape(fwd))
        if official == "none" and not forwarder:
            if self.settings.best_guess:
                effective = self._guess(q, conn)
                if effective == "temperror":
                    return self._temperror(conn, q, ident, q_expl(q), receiver, authres,
                                           extra, official="none")
                if effective != "pass" and q.o and self._helo_valid(conn, helo, hinfo,
                                                                    receiver, deadline):
                    h = helo.lower().rstrip(".")
                    if h == q.o or h.endswith("." + q.o):
                        effective = "pass"
                key_result = "neutral" if effective == "none" else effective
            if (conn.dyn and effective != "pass"
                    and (self.settings.best_guess or self.settings.reject_noptr)
                    and not self._helo_valid(conn, helo, hinfo, receiver, deadline)):
                strike3, key_result = True, "none"
        if effective != official:
            extra["bestguess"] = effective
        if hinfo.result is not None and helo.lower() != q.o:
            extra["helo_spf"] = hinfo.result
        received = header_safe(q.get_header(official, receiver, **extra))
        base = SpfResult(CONTINUE, received, authres, result=official)

        policy = self._lookup(KEYS[key_result], subject, key_result, q.o, strike3)
        result = self._apply(policy, base, conn, sender, helo, key_result, subject, expl,
                             strike3=strike3, q=q)
        if whitelist:
            result = dataclasses.replace(result, whitelist=True)
        if lax and result.cbv is None and not result.decision.final:
            target = self._target(sender, helo, dsn=True)
            if target is not None:
                result = dataclasses.replace(
                    result, cbv=CbvRequest(target, "permerror", "permerror"))
        self._log(key_result, policy, subject, official, effective, strike3, forwarder)
        if (effective != "pass" and not sender.null and not result.decision.final
                and not result.whitelist):
            result = self._helo_policy(conn, helo, hinfo, receiver, deadline, result)
        return result

    # ------------------------------------------------------------- evaluation

    def _query(self, ip: str, sender: Address, helo: str, receiver: str,
               deadline: float) -> ResolverQuery:
        local: str | None = None
        domain: str | None = None
        if sender.null:
            text = ""
        elif sender.domain:
            text, local, domain = sender.mailbox, sender.local, sender.domain
        else:  # unqualified: pyspf makes it local@HELO
            text, local, domain = sender.local, sender.local, helo.lower()
        return ResolverQuery(self.resolver, ip, text, helo, receiver=receiver, local=local,
                             domain=domain, delegate=self.settings.delegate,
                             deadline=deadline, clock=self.clock)

    def _check(self, q: ResolverQuery, record: str | None) -> tuple[str, int, str]:
        """pyspf's check(); a crash of pyspf on hostile input is a temperror
        (logged with its traceback), never a pass."""
        try:
            if not q.d:
                return "none", 250, ""
            res, code, expl = q.check(record)
        except (pyspf.TempError, DnsTempError) as exc:
            return "temperror", 451, f"SPF Temporary Error: {exc}"
        except Exception:
            log.exception("SPF: pyspf failed for %s", escape(getattr(q, "s", "?")))
            return "temperror", 451, "SPF Temporary Error: internal error"
        res = str(res)
        if res not in RESULTS:  # "ambiguous" and other pre-RFC results
            res = "permerror" if res in ("ambiguous", "unknown", "error") else "neutral"
        return res, int(code), str(expl)

    def _guess(self, q: ResolverQuery, conn: Connection) -> str:
        record = GUESS_NOPTR if conn.dyn else GUESS
        try:
            if pyspf.RE_TOPLAB.split(q.d)[-1]:
                return "none"  # not a valid domain: pyspf's best_guess says so too
            res, _c, _e = self._check(q, record)
        except Exception:
            log.exception("SPF: best guess failed for %s", escape(q.d))
            return "temperror"
        if res == "permerror":  # a guess record cannot be broken; a lookup limit can
            res = "neutral"
        return res

    def _forwarder(self, ip: str, helo: str, receiver: str, deadline: float) -> str:
        for fwd in self.settings.trusted_forwarder:
            name = fwd.strip().strip(".").lower()
            if not name:
                continue
            q = ResolverQuery(self.resolver, ip, f"postmaster@{name}", helo,
                              receiver=receiver, deadline=deadline, clock=self.clock)
            res = self._check(q, None)[0]
            if res == "none":
                res = self._check(q, GUESS_FORWARDER)[0]
            if res == "pass":
                return name
        return ""

    def _helo_valid(self, conn: Connection, helo: str, h: _Helo, receiver: str,
                    deadline: float) -> bool:
        """The HELO's own SPF check passes, or its A/AAAA records include the
        client IP (SPEC §4a).  Computed once per call; DNS trouble: not valid."""
        if h.valid is not None:
            return h.valid
        h.valid = False
        if not _is_hostname(helo) or conn.ip is None:
            return False
        self._helo_result(conn, helo, h, receiver, deadline)
        if h.result == "pass":
            h.valid = True
            return True
        ip = ipaddress.ip_address(conn.ip)
        try:
            found = self.resolver.a(helo) if ip.version == 4 else self.resolver.aaaa(helo)
        except DnsTempError:
            return False
        for text in found:
            try:
                if ipaddress.ip_address(text) == ip:
                    h.valid = True
            except ValueError:
                continue
        return h.valid

    def _helo_result(self, conn: Connection, helo: str, h: _Helo, receiver: str,
                     deadline: float) -> str:
        if h.result is None:
            h.result = "none"
            if _is_hostname(helo) and conn.ip is not None:
                q = ResolverQuery(self.resolver, conn.ip, "", helo, receiver=receiver,
                                  deadline=deadline, clock=self.clock)
                h.result = self._check(q, None)[0]
        return h.result

    # ---------------------------------------------------------------- policy

    def _lookup(self, key: str, subject: str, result: str, domain: str,
                strike3: bool) -> Policy:
        value = self.access.lookup(key, subject)
        if value is not None:
            return Policy(key, value, "access")
        kind = default_policy(self.settings, result, domain, strike3)
        return Policy(key, AccessValue(kind), "default")

    def _apply(self, policy: Policy, base: SpfResult, conn: Connection, sender: Address,
               helo: str, result: str, subject: str, expl: str, *, strike3: bool,
               q: ResolverQuery) -> SpfResult:
        kind = policy.value.kind
        domain = q.o or helo
        tag = "no PTR, HELO or SPF" if strike3 else f"SPF {result}"
        template = "strike3" if strike3 else result
        logtext = f"{tag} for {subject} from {conn.ip}"
        immediate = result == "pass"  # a rejected pass: banned sender, say it now
        if kind is AccessKind.OK:
            return base
        if kind is AccessKind.WHITELIST:
            return dataclasses.replace(base, whitelist=True)
        if kind in (AccessKind.CBV, AccessKind.DSN):
            dsn = kind is AccessKind.DSN
            target = self._target(sender, helo, dsn=dsn)
            if target is None:
                return base
            return dataclasses.replace(
                base, cbv=CbvRequest(target, template if dsn else None, result))
        if kind is AccessKind.ERROR:
            d = policy.value.error_decision(tag, log=logtext)
            return dataclasses.replace(base, decision=dataclasses.replace(
                d, delay=not immediate))
        if kind is AccessKind.DISCARD:
            return dataclasses.replace(base, decision=Decision(
                Action.DISCARD, tag, log=logtext))
        if kind is AccessKind.TEMPFAIL:
            return dataclasses.replace(base, decision=Decision.tempfail(
                tag, f"{tag}: mail from {domain} cannot be accepted now, try again later",
                xcode="4.7.1", log=logtext))
        # REJECT, BLACKLIST, BAN
        code, xcode = "550", "5.7.1"
        lines = self._reject_lines(result, strike3, domain, conn, q, expl)
        if result == "permerror":
            xcode = "5.5.2"
        d = Decision.reject(tag, *lines, code=code, xcode=xcode, log=logtext,
                            delay=not immediate)
        return dataclasses.replace(base, decision=d, ban=kind is AccessKind.BAN,
                                   blacklist=kind is AccessKind.BLACKLIST)

    @staticmethod
    def _reject_lines(result: str, strike3: bool, domain: str, conn: Connection,
                      q: ResolverQuery, expl: str) -> tuple[str, ...]:
        ip = conn.ip or ""
        if strike3:
            return (f"No PTR record, no valid HELO and no SPF record for {domain} "
                    f"from {ip}",)
        if result == "pass":
            return (f"We do not accept mail from {domain}.",)
        if result == "permerror":
            return (header_safe(f"SPF permerror: {expl}", 200),
                    f"There is a fatal syntax error in the SPF record for {domain}.")
        comment = header_safe(q.get_header_comment(result), 200)
        lines = [f"SPF {result}: {comment}"]
        own = header_safe(expl, 200)
        if result == "fail" and own and own not in (pyspf.EXPLANATIONS.get("fail"), comment):
            lines.append(f"{domain} says: {own}")  # the domain's exp= text
        if result in ("softfail", "neutral"):
            lines.append(f"Mail from {domain} must pass SPF here.")
        return tuple(lines)

    def _temperror(self, conn: Connection, q: ResolverQuery, ident: str, expl: str,
                   receiver: str, authres: tuple[str, ...], extra: dict[str, str],
                   official: str = "temperror") -> SpfResult:
        """SPF-TempError: REJECT-type values (and the default) TEMPFAIL 451 4.3.0
        at once; OK/CBV/DSN/WHITELIST go on as if there were no SPF record."""
        if official != "temperror":
            extra = {**extra, "bestguess": "temperror"}
        received = header_safe(q.get_header(official, receiver, **extra))
        base = SpfResult(CONTINUE, received, authres, result=official)
        policy = self._lookup(KEYS["temperror"], ident, "temperror", q.o, False)
        kind = policy.value.kind
        tag = "SPF temperror"
        domain = q.o or q.h
        self._log("temperror", policy, ident, official, "temperror", False, "")
        if kind is AccessKind.ERROR:
            return dataclasses.replace(base, decision=policy.value.error_decision(
                tag, log=f"{tag} for {ident}"))
        if kind is AccessKind.WHITELIST:
            return dataclasses.replace(base, whitelist=True)
        if kind in (AccessKind.CBV, AccessKind.DSN):
            target = self._target(parse_address(f"<{ident}>"), q.h,
                                  dsn=kind is AccessKind.DSN)
            if target is None:
                return base
            template = "temperror" if kind is AccessKind.DSN else None
            return dataclasses.replace(base, cbv=CbvRequest(target, template, "temperror"))
        if kind is AccessKind.OK:
            log.info("SPF: ignoring DNS error for %s", escape(ident))
            return base
        if kind is AccessKind.DISCARD:
            return dataclasses.replace(base, decision=Decision(
                Action.DISCARD, tag, log=f"{tag} for {ident}"))
        # TEMPFAIL, REJECT, BLACKLIST, BAN: the DNS of the domain is broken, not the sender
        reason = header_safe(expl, 200)
        d = Decision.tempfail(
            tag, f"SPF temperror: {reason}" if reason else "SPF temperror",
            f"Cannot accept mail from {domain} until its DNS server answers for SPF.",
            log=f"{tag} for {header_safe(ident, 200)}: {reason}")
        return dataclasses.replace(base, decision=d)

    def _helo_policy(self, conn: Connection, helo: str, h: _Helo, receiver: str,
                     deadline: float, result: SpfResult) -> SpfResult:
        """A HELO that fails its own SPF check (HELO-<Result> keys)."""
        if not _is_hostname(helo):
            return result
        hres = self._helo_result(conn, helo, h, receiver, deadline)
        key = HELO_KEYS.get(hres)
        if key is None:
            return result
        name = helo.lower().rstrip(".")
        value = self.access.lookup(key, name)
        policy = Policy(key, value or AccessValue(AccessKind.REJECT),
                        "access" if value else "default")
        kind = policy.value.kind
        tag = "hello SPF"
        logtext = f"hello SPF: {hres} for {name} from {conn.ip}"
        log.info("SPF: HELO %s policy %s for %s (key %s, %s)", hres, kind.value,
                 escape(name), key, policy.source)
        if kind is AccessKind.OK:
            return result
        if kind is AccessKind.WHITELIST:
            return dataclasses.replace(result, whitelist=True)
        if kind in (AccessKind.CBV, AccessKind.DSN):
            if result.cbv is not None:  # the first queued CBV wins
                return result
            target = parse_address(f"<postmaster@{name}>")
            template = "heloerror" if kind is AccessKind.DSN else None
            return dataclasses.replace(result, cbv=CbvRequest(target, template, hres))
        if kind is AccessKind.ERROR:
            d = dataclasses.replace(policy.value.error_decision(tag, log=logtext), delay=True)
            return dataclasses.replace(result, decision=d)
        if kind is AccessKind.DISCARD:
            return dataclasses.replace(result, decision=Decision(Action.DISCARD, tag,
                                                                 log=logtext))
        if kind is AccessKind.TEMPFAIL:
            return dataclasses.replace(result, decision=Decision.tempfail(
                tag, f"hello SPF {hres}: try again later", xcode="4.7.1", log=logtext))
        d = Decision.reject(tag, f"hello SPF {hres}: {name} does not designate {conn.ip} "
                            "as a permitted sender", log=logtext, delay=True)
        return dataclasses.replace(result, decision=d, ban=kind is AccessKind.BAN,
                                   blacklist=kind is AccessKind.BLACKLIST)

    # --------------------------------------------------------------- helpers

    @staticmethod
    def _identity(q: ResolverQuery, sender: Address, helo: str) -> str:
        """The checked identity, for access lookups: the MAIL FROM address,
        ``postmaster@HELO`` for ``<>``, ``local@HELO`` when unqualified."""
        if sender.null:
            return f"postmaster@{helo.lower()}" if helo else "postmaster"
        if sender.domain:
            return sender.mailbox
        return f"{sender.local}@{helo.lower()}" if helo else sender.local

    @staticmethod
    def _target(sender: Address, helo: str, *, dsn: bool) -> Address | None:
        """Whom a CBV or DSN goes to: the sender; ``postmaster@HELO`` for a DSN
        about ``<>`` (a CBV of ``<>`` makes no sense); nobody when there is
        no usable domain."""
        if sender.null:
            if dsn and _is_hostname(helo):
                return parse_address(f"<postmaster@{helo.lower().rstrip('.')}>")
            return None
        if sender.qualified:
            return sender
        if sender.local and _is_hostname(helo):
            return Address(sender.raw, sender.local, helo.lower().rstrip("."))
        return None

    @staticmethod
    def _authres(official: str, q: ResolverQuery, sender: Address,
                 helo: str) -> tuple[str, ...]:
        """``spf=<result> smtp.mailfrom=<addr>`` (RFC 8601 §2.7.2), or
        ``smtp.helo=`` for ``<>``.  A local part that is not a dot-atom (or not
        ASCII) is left out: the domain alone is a valid value."""
        if sender.null:
            h = helo.strip().rstrip(".")
            return (f"spf={official} smtp.helo={pvalue(h)}",) if h else (f"spf={official}",)
        domain = q.o or ""
        if sender.local and _DOT_ATOM.fullmatch(sender.local) and domain.isascii():
            value = f"{sender.local}@{domain}"
        else:
            value = domain
        return (f"spf={official} smtp.mailfrom={pvalue(value)}",)

    def _log(self, result: str, policy: Policy, subject: str, official: str,
             effective: str, strike3: bool, forwarder: str) -> None:
        notes = []
        if official != result:
            notes.append(f"official={official}")
        if effective not in (official, result):
            notes.append(f"effective={effective}")
        if strike3:
            notes.append("strike3")
        if forwarder:
            notes.append(f"forwarder={escape(forwarder)}")
        log.info("SPF: %s policy %s for %s (key %s, %s)%s", result, policy.value.kind.value,
                 escape(subject), policy.key, policy.source,
                 (" " + " ".join(notes)) if notes else "")


def q_expl(q: Any) -> str:
    return str(getattr(q, "prob", "") or "DNS error during the best guess")
