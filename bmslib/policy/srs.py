"""SRS (Sender Rewriting Scheme) with pysrs: bounce validation and sender
rewriting (SPEC §4 "SRS"; inventory §2.5 "SRS/SES bounce validation", §2.9).

* :meth:`Srs.check_bounce_rcpt` (envrcpt): a bounce to one of our
  ``srs_domains`` must go to a valid SRS0/SRS1 address, which is reversed to
  the original recipient; a forged signature is rejected at once, an
  unsigned bounce is rejected (delayed, at DATA) only with ``reject_spoofed``.
* :meth:`Srs.rewrite_sender` (eom): the ``chgfrom`` sender for mail from a
  non-local sender relayed to an outside domain (no sendmail socketmap).

pysrs 1.0.3 is used through :class:`_Guarded`, a ``SRS.Guarded`` subclass
that (a) takes the time from an injected clock instead of ``time.time()``,
(b) reimplements the HMAC with ``base64.encodebytes`` (pysrs calls
``encodestring``, gone since Python 3.9; the output is identical, so addresses
stay compatible with other pysrs installations), and (c) reimplements
``parse`` so that a bad hash or an old timestamp raises :class:`_BadHash` /
:class:`_Expired` instead of relying on pysrs's ``assert`` statements, which
``python -O`` strips (a forged address would then reverse).  Nothing here does I/O.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import SRS
from SRS.Guarded import Guarded

from .address import Address
from .decision import CONTINUE, Decision
from .headertext import header_safe

_DAY = 60 * 60 * 24  # pysrs PRECISION
_BASE32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_TICKSLOTS = len(_BASE32) ** 2
_SRS_LOCAL = re.compile(r"^SRS[01][-+=]", re.IGNORECASE)
_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")

SPOOFED_BOUNCE_TEXT = (
    "I did not send you that message. Please consider implementing SPF "
    "(http://www.openspf.org) to avoid bouncing mail to spoofed senders. Thank you.")


@dataclass(frozen=True)
class SrsSettings:
    """``[srs]`` options.  ``srs_domains`` = fwdomain + sign + srs (lowercased):
    our domains whose bounces must carry a valid signature."""

    secret: str
    old_secrets: tuple[str, ...] = ()  # still accepted when verifying (secret rotation)
    maxage: int = 8  # days
    hashlength: int = 8
    separator: str = "="
    fwdomain: str = ""
    srs_domains: frozenset[str] = frozenset()
    reject_spoofed: bool = False
    banned_users: frozenset[str] = frozenset()  # lowercased local parts treated as bounces


def validate(settings: SrsSettings) -> None:
    """Raise ValueError (one line) when SRS cannot work with ``settings``."""
    if not settings.secret:
        raise ValueError("[srs] secret is required when SRS is enabled")
    if not settings.fwdomain:
        raise ValueError("[srs] fwdomain is required when SRS is enabled")
    if settings.separator not in ("=", "-", "+"):
        raise ValueError(f"[srs] separator must be =, - or +, not {settings.separator!r}")
    if settings.maxage < 1 or settings.hashlength < 1:
        raise ValueError("[srs] maxage and hashlength must be positive")


@dataclass(frozen=True)
class RcptVerdict:
    """What :meth:`Srs.check_bounce_rcpt` says about one recipient."""

    reversed: str | None  # the original recipient to deliver to, when SRS-reversed
    decision: Decision  # CONTINUE or a reject (possibly delayed)


class _BadHash(Exception):
    pass


class _Expired(Exception):
    pass


class _Guarded(Guarded):  # type: ignore[misc]  # untyped base
    """``SRS.Guarded`` with an injected clock, a working HMAC and real errors."""

    def __init__(self, clock: Callable[[], float], **kw: Any) -> None:
        self._clock = clock
        super().__init__(**kw)

    def warn(self, *msg: str) -> None:  # pysrs prints to stderr: stay quiet
        pass

    def _mac(self, secret: str, data: tuple[bytes, ...]) -> bytes:
        h = hmac.new(secret.encode(), b"", hashlib.sha1)
        for item in data:
            h.update(item.lower())
        return base64.encodebytes(h.digest())

    def hash_create(self, *data: bytes) -> bytes:
        return self._mac(self.secret[0], data)[:self.hashlength]

    def hash_verify(self, hash: bytes, *data: bytes) -> bool:
        if len(hash) < self.hashmin:
            raise _BadHash
        valid = [self._mac(s, data)[:len(hash)] for s in self.secret]
        if any(hmac.compare_digest(hash, v) for v in valid):
            return True
        if any(hmac.compare_digest(hash.lower(), v.lower()) for v in valid):
            return True  # a remote MTA smashed case in the local part
        raise _BadHash

    def parse(self, user: str, srshost: str | None = None) -> tuple[str, str]:
        """Guarded.parse + Shortcut.parse without their ``assert`` checks:
        ``(host, user)`` of the previous hop, else ValueError/_BadHash/_Expired."""
        rest, srs1 = self.srs1re.subn("", user, 1)
        if srs1:
            fields = rest.split(SRS.SRSSEP, 2)[-3:]
            # "Hashless" SRS1 (pysrs allowunsafesrs) is never accepted.
            if len(fields) < 3 or "." in fields[0] or not fields[1] or not fields[2]:
                raise ValueError("malformed SRS1 address")
            hash_, host, srsuser = fields
            self.hash_verify(hash_.encode(), host.encode(), srsuser.encode())
            return host, SRS.SRS0TAG + srsuser
        rest, srs0 = self.srs0re.subn("", user, 1)
        if not srs0:
            raise ValueError("not an SRS address")
        fields = rest.split(SRS.SRSSEP, 3)[-4:]
        if len(fields) < 4:
            raise ValueError("malformed SRS0 address")
        hash_, stamp, host, senduser = fields
        if not host and srshost:
            host = srshost
        self.hash_verify(hash_.encode(), stamp.encode(), host.encode(), senduser.encode())
        self.timestamp_check(stamp)
        return host, senduser

    def timestamp_create(self, ts: float | None = None) -> str:
        result: str = super().timestamp_create(ts or self._clock())
        return result

    def timestamp_check(self, timestamp: str) -> bool:
        ts = 0
        for d in timestamp.upper():
            digit = _BASE32.find(d)
            if digit < 0:
                raise _Expired
            ts = ts * len(_BASE32) + digit
        now = int(self._clock() // _DAY) % _TICKSLOTS
        while now < ts:
            now += _TICKSLOTS
        if now <= ts + self.maxage:
            return True
        raise _Expired


class Srs:
    """Forward, reverse and bounce checks for one :class:`SrsSettings`.
    ``clock`` returns seconds since the epoch (tests pass a fake)."""

    def __init__(self, settings: SrsSettings, clock: Callable[[], float] | None = None) -> None:
        validate(settings)
        self.settings = settings
        self._srs = _Guarded(clock or time.time,
                             secret=[settings.secret, *settings.old_secrets],
                             maxage=settings.maxage, hashlength=settings.hashlength,
                             separator=settings.separator)

    # --- addresses -----------------------------------------------------------------------

    def forward(self, sender: str) -> str:
        """``sender`` (``user@domain``) as an SRS address at fwdomain: SRS0 for
        a plain address, SRS1 for one that is already SRS0/SRS1 (as pysrs does);
        an address already at fwdomain is returned unchanged.  Raises
        ValueError for an address without ``@``."""
        result: str = self._srs.forward(sender, self.settings.fwdomain)
        return result

    def reverse(self, address: str) -> str | None:
        """The original address of an SRS0/SRS1 ``address``, or None when it
        is not SRS, malformed, forged or expired."""
        return self._reverse(address)[0]

    def _reverse(self, address: str) -> tuple[str | None, str]:
        """``(original, "")`` or ``(None, why)`` with why one of
        ``not SRS``, ``malformed``, ``bad hash``, ``expired``."""
        local = address.rpartition("@")[0]
        if not _SRS_LOCAL.match(local[1:] if local.startswith('"') else local):
            return None, "not SRS"
        try:
            result: str = self._srs.reverse(address)
        except _BadHash:
            return None, "bad hash"
        except _Expired:
            return None, "expired"
        except (ValueError, AssertionError, IndexError):
            return None, "malformed"
        return result, ""

    # --- policy --------------------------------------------------------------------------

    def is_bounce(self, sender: Address) -> bool:
        """The null sender, or a local part listed in ``banned_users``."""
        return sender.null or sender.local.lower() in self.settings.banned_users

    def _ours(self, domain: str) -> bool:
        return domain in self.settings.srs_domains or domain == self.settings.fwdomain.lower()

    def check_bounce_rcpt(self, sender: Address, rcpt: Address) -> RcptVerdict:
        """Validate one recipient of a bounce (:meth:`is_bounce`) to one of our
        ``srs_domains``; any other mail or recipient gives CONTINUE.  An
        SRS0/SRS1 local part that reverses gives the original recipient; one
        that does not gives an immediate ``srs spoofed`` reject (the log says
        why: bad hash, expired, malformed).  A non-SRS recipient gives, with
        ``reject_spoofed``, a *delayed* reject (``bounce with no SRS encoding``
        for ``<>``, ``bogus DSN`` for a banned user); without it CONTINUE.
        Exemptions (trusted/internal hosts, auto-whitelisted senders) are the
        caller's business."""
        if not self.is_bounce(sender) or not self._ours(rcpt.domain):
            return RcptVerdict(None, CONTINUE)
        if _SRS_LOCAL.match(rcpt.local):
            original, why = self._reverse(rcpt.mailbox)
            if original is not None:
                return RcptVerdict(original, CONTINUE)
            return RcptVerdict(None, Decision.reject(
                "srs spoofed", "Invalid SRS signature",
                log=f"srs spoofed: {why}: {header_safe(rcpt.mailbox, 300)}"))
        if not self.settings.reject_spoofed or rcpt.local.lower() == "postmaster":
            return RcptVerdict(None, CONTINUE)  # postmaster takes every bounce (RFC 5321)
        if sender.null:
            return RcptVerdict(None, Decision.reject(
                "bounce with no SRS encoding", SPOOFED_BOUNCE_TEXT, delay=True))
        return RcptVerdict(None, Decision.reject(
            "bogus DSN", f"I do not accept normal mail from {header_safe(sender.local, 200)}.",
            log=f"bogus DSN: {header_safe(sender.mailbox, 300)}", delay=True))

    def rewrite_sender(self, sender: Address, recipients: Sequence[Address],
                       internal_domains: Sequence[str]) -> str | None:
        """The SRS0 sender for ``chgfrom`` when mail from a non-local sender is
        relayed to at least one outside recipient domain; else None (also for
        ``<>`` and unqualified senders).  Local = matches an ``internal_domains``
        glob (case-insensitive) or is in ``srs_domains``/fwdomain; an
        unqualified recipient counts as local."""
        if not sender.qualified or self._local(sender.domain, internal_domains):
            return None
        if not any(r.domain and not self._local(r.domain, internal_domains)
                   for r in recipients):
            return None
        local = sender.local
        if not _DOT_ATOM.fullmatch(local):  # keep a quoted local part quoted
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        try:
            return self.forward(f"{local}@{sender.domain}")
        except ValueError:
            return None

    def _local(self, domain: str, internal_domains: Sequence[str]) -> bool:
        d = domain.lower()
        return self._ours(d) or any(fnmatch.fnmatchcase(d, p.lower()) for p in internal_domains)
