"""ARC (RFC 8617) with dkimpy: verify the chain of outside mail (the
``arc=`` item of Authentication-Results, and the sealer that may rescue a
DMARC failure of forwarded mail), and seal mail we pass on.

Verification never raises: whatever dkimpy chokes on is ``fail``; DNS that
cannot be answered is ``temperror`` (and rescues nothing).  Sealing needs
our own Authentication-Results header (authserv-id = the MTA's name) with an
``arc=`` item in the message handed over; it returns the three header
fields of the new ARC set, or raises :class:`ArcError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dkim

from ..interfaces import DnsTempError
from .dkim import TxtLookup
from .headertext import header_safe, pvalue

ARC_HEADERS = ("arc-seal", "arc-message-signature", "arc-authentication-results")


class ArcError(ValueError):
    """Sealing is impossible (bad key, no Authentication-Results, dkimpy refused)."""


@dataclass(frozen=True)
class ArcSettings:
    """``[arc]``: sealing needs ``privkey`` (PKCS#1 PEM bytes) and ``domain``."""

    privkey: bytes | None = None
    domain: str = ""
    selector: str = "default"


@dataclass(frozen=True)
class ArcResult:
    """``result``: pass, fail, none or temperror; ``sealer`` the d= of the
    newest ARC-Seal (the last hop before us), ``instances`` the chain length."""

    result: str
    sealer: str = ""
    instances: int = 0
    reason: str = ""

    def authres(self) -> str:
        if self.result == "pass":
            return f"arc=pass (i={self.instances} d={pvalue(self.sealer)})"
        if self.result == "none":
            return "arc=none"
        reason = header_safe(self.reason, 200).replace("\\", "\\\\").replace('"', '\\"')
        return f'arc={self.result} reason="{reason}"' if reason else f"arc={self.result}"


def has_arc(headers: Sequence[tuple[str, str]]) -> bool:
    return any(name.lower() in ARC_HEADERS for name, _ in headers)


def _text(value: object) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value or "")


def verify(message: bytes, txt: TxtLookup) -> ArcResult:
    """The chain of ``message`` (CRLF bytes)."""
    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        records = txt(_text(name).rstrip("."))
        return next((r for r in records if r.lstrip().startswith(b"v=DKIM1")),
                    records[0] if records else None)

    try:
        cv, results, comment = dkim.arc_verify(message, dnsfunc=dnsfunc)
    except DnsTempError as e:
        return ArcResult("temperror", reason=f"DNS: {e}" if str(e) else "DNS temporary error")
    except Exception as e:  # dkimpy on hostile input: never crash
        return ArcResult("fail", reason=f"{type(e).__name__}: {e}")
    newest = results[0] if results else {}
    sealer = _text(newest.get("as-domain")).lower()
    count = len(results)
    if cv == dkim.CV_Pass:
        return ArcResult("pass", sealer, count)
    if cv == dkim.CV_None:
        return ArcResult("none")
    return ArcResult("fail", sealer, count, _text(comment).splitlines()[0] if comment else "")


def seal(message: bytes, settings: ArcSettings, authserv_id: str
         ) -> list[tuple[str, str]]:
    """The new ARC set as ``(name, value)`` fields, topmost first (values
    folded with ``\\n`` + tab, as the milter's ``insheader`` wants)."""
    if not settings.privkey or not settings.domain:
        raise ArcError("ARC sealing needs [arc] privkey and domain")
    try:
        lines = dkim.arc_sign(message, settings.selector.encode("ascii"),
                              settings.domain.encode("ascii"), settings.privkey,
                              authserv_id.encode("ascii"))
    except Exception as e:  # dkimpy's errors, and what it raises on odd input
        raise ArcError(f"ARC sealing failed: {header_safe(str(e), 200)}") from e
    if not lines:
        raise ArcError("ARC sealing failed: no Authentication-Results of ours")
    fields = []
    for line in lines:
        name, _, value = line.decode("ascii").partition(":")
        fields.append((name.strip(), value.strip().replace("\r\n", "\n")))
    return fields
