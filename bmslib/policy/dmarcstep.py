"""What bms does with a DMARC failure: the access-file keys
``DMARC-Reject:<domain>``, ``DMARC-Quarantine:<domain>`` and
``DMARC-None:<domain>`` (per From: domain, or the bare ``DMARC-Reject:``
default), chosen by the policy that applies after pct and t=y.  Without a
key the published policy is honoured: reject is a 550, quarantine the milter
quarantine action (Postfix: the hold queue), none accepts.  Values: OK,
REJECT, QUARANTINE, TEMPFAIL, ERROR:"...".

A pass, none, temperror or permerror never blocks mail; neither does a
failure of a message already whitelisted (the line is still logged).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..interfaces import Access
from ..log import escape
from .decision import CONTINUE, AccessKind, Decision
from .dmarc import DmarcOutcome

log = logging.getLogger("bms")

TAGS = {"reject": "DMARC-Reject", "quarantine": "DMARC-Quarantine", "none": "DMARC-None"}
_DEFAULT = {"reject": AccessKind.REJECT, "quarantine": AccessKind.QUARANTINE,
            "none": AccessKind.OK}


@dataclass(frozen=True)
class DmarcVerdict:
    decision: Decision = CONTINUE
    quarantine: str = ""  # the reason, when the message goes to quarantine
    tag: str = ""  # the access key that sent it there


def describe(o: DmarcOutcome) -> str:
    """``<result> policy=<p> header.from=<domain> (spf=..., dkim=...)``."""
    text = f"{o.result} policy={o.policy or '-'}"
    if o.disposition != o.policy and o.result == "fail":
        text += f" applied={o.disposition}"
    text += f" header.from={o.domain or '-'} (spf={o.spf}, dkim={o.dkim})"
    return text + (f" {o.reason}" if o.reason else "")


def verdict(outcome: DmarcOutcome, access: Access, whitelisted: bool,
            arc_sealer: str = "") -> DmarcVerdict:
    """Log the outcome (one line) and decide what happens to the message.
    ``arc_sealer``: a trusted sealer whose valid ARC chain lets a failure
    of forwarded mail through."""
    what = "DMARC " + describe(outcome)
    rescue = f" (forwarded: ARC pass sealed by trusted {arc_sealer})" \
        if arc_sealer and outcome.result == "fail" else ""
    log.info("DMARC: %s%s", escape(describe(outcome)), escape(rescue))
    if outcome.result != "fail" or whitelisted or rescue:
        return DmarcVerdict()
    tag = TAGS[outcome.disposition]
    value = access.lookup(tag, outcome.domain)
    kind = _DEFAULT[outcome.disposition] if value is None else value.kind
    if value is not None and kind is AccessKind.ERROR:
        return DmarcVerdict(value.error_decision(tag, what))
    if kind is AccessKind.TEMPFAIL:
        return DmarcVerdict(Decision.tempfail(
            tag, f"DMARC policy of {outcome.domain}: try again later.", log=what))
    if kind in (AccessKind.REJECT, AccessKind.BLACKLIST, AccessKind.BAN):
        return DmarcVerdict(Decision.reject(
            tag, f"Message refused: it fails the DMARC policy of {outcome.domain}.",
            log=what))
    if kind is AccessKind.QUARANTINE:
        return DmarcVerdict(quarantine=what, tag=tag)
    return DmarcVerdict()
