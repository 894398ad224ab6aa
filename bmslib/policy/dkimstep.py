"""DKIM at end of message (SPEC §4 "eom"): verify every signature of
external mail, apply the ``DKIM-Pass:`` / ``DKIM-Fail:`` / ``DKIM-Error:``
access keys of each signing domain, and sign internal mail after every other
edit.  The message is put together from the spool (headers as the MTA sent
them, CRLF line ends); verification is skipped, and said so, above
``verify_max`` bytes, because dkimpy needs the whole message in memory.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO

from ..interfaces import Access
from ..log import escape
from ..spool import copy_stream, write_headers
from .decision import CONTINUE, AccessKind, Decision
from .dkim import DkimError, DkimResult, DkimSettings, TxtLookup, sign, verify_all

log = logging.getLogger("bms")

Header = tuple[str, str]

VERIFY_MAX = 16 << 20  # bytes of message dkimpy is given to verify

_ACCESS_TAG = {"pass": "DKIM-Pass", "fail": "DKIM-Fail", "policy": "DKIM-Fail",
               "permerror": "DKIM-Error", "temperror": "DKIM-Error"}


@dataclass(frozen=True)
class DkimOutcome:
    """What verification found: one result per signature (topmost first),
    the access-file decision, and whether a key whitelisted the message."""

    results: tuple[DkimResult, ...] = ()
    decision: Decision = CONTINUE
    whitelist: bool = False


def message_bytes(headers: Sequence[Header], body: IO[bytes], limit: int | None = None
                  ) -> bytes | None:
    """Header, blank line and body as one CRLF message; None above ``limit`` bytes."""
    out = io.BytesIO()
    write_headers(out, headers)
    out.write(b"\r\n")
    if limit is not None and out.tell() > limit:
        return None
    copy_stream(body, out)
    if limit is not None and out.tell() > limit:
        return None
    return out.getvalue()


def signed(headers: Sequence[Header]) -> bool:
    return any(name.lower() == "dkim-signature" for name, _ in headers)


def verify(headers: Sequence[Header], body: IO[bytes], txt: TxtLookup, access: Access,
           whitelisted: bool, verify_max: int = VERIFY_MAX) -> DkimOutcome:
    """Verify every DKIM-Signature; ``()`` results for unsigned mail."""
    if not signed(headers):
        return DkimOutcome()
    message = message_bytes(headers, body, verify_max)
    if message is None:
        log.info("DKIM: not verified: message over %d bytes", verify_max)
        return DkimOutcome((DkimResult("neutral", reason="message too large to verify"),))
    results = verify_all(message, txt)
    for r in results:
        why = f" ({r.reason})" if r.reason and r.result != "pass" else ""
        log.info("DKIM: %s d=%s s=%s%s", r.result, escape(r.domain or "-"),
                 escape(r.selector or "-"), escape(why))
    if whitelisted:
        return DkimOutcome(results)
    return _policy(results, access)


def _policy(results: tuple[DkimResult, ...], access: Access) -> DkimOutcome:
    """The first signing domain whose access key says something other than OK."""
    whitelist = False
    for r in results:
        tag = _ACCESS_TAG.get(r.result)
        if tag is None or not r.domain:
            continue
        value = access.lookup(tag, r.domain)
        if value is None or value.kind is AccessKind.OK:
            continue
        what = f"DKIM {r.result} for {r.domain}"
        if value.kind is AccessKind.WHITELIST:
            log.info("WHITELIST: %s", escape(what))
            whitelist = True
        elif value.kind is AccessKind.ERROR:
            return DkimOutcome(results, value.error_decision(tag, what), whitelist)
        elif value.kind is AccessKind.TEMPFAIL:
            return DkimOutcome(results, Decision.tempfail(
                tag, f"{what}: try again later.", log=what), whitelist)
        elif value.kind in (AccessKind.REJECT, AccessKind.BLACKLIST, AccessKind.BAN):
            return DkimOutcome(results, Decision.reject(tag, f"{what}.", log=what), whitelist)
    return DkimOutcome(results, CONTINUE, whitelist)


def signature(headers: Sequence[Header], body: IO[bytes], settings: DkimSettings
              ) -> str | None:
    """The DKIM-Signature value for the message as it will be delivered, or
    None (logged) when dkimpy refuses it; signing never blocks mail."""
    message = message_bytes(headers, body)
    assert message is not None
    try:
        value = sign(message, settings)
    except DkimError as exc:
        log.warning("DKIM: not signed: %s", escape(str(exc)))
        return None
    log.info("DKIM: signed d=%s s=%s", settings.domain, escape(settings.selector))
    return value


def should_sign(settings: DkimSettings | None, sender_domain: str, null_sender: bool) -> bool:
    """Internal mail from the signing domain (or one below it), or a bounce."""
    if settings is None or not settings.privkey or not settings.domain:
        return False
    d = sender_domain.lower()
    return null_sender or d == settings.domain or d.endswith("." + settings.domain)
