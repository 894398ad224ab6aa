"""DKIM with dkimpy: verify every signature of external mail, sign internal
mail, and the ``dkim=`` items of Authentication-Results (SPEC §4 "eom";
inventory §2.8).

dkimpy needs the whole message in memory (``bytes``, CRLF line ends: header,
blank line, body).  That is acceptable for signing internal mail; for
verification the caller may cap the size it hands over.  DNS goes through the
caller's ``txt(name) -> list[bytes]`` (``Resolver.txt``); a
:class:`~bmslib.interfaces.DnsTempError` from it becomes ``temperror``.
Verification never raises: whatever dkimpy chokes on is a ``permerror``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dkim

from ..interfaces import DnsTempError
from .headertext import header_safe, pvalue

TxtLookup = Callable[[str], list[bytes]]


@dataclass(frozen=True)
class DkimSettings:
    """``[dkim]``: signing needs both ``privkey`` (PKCS#1 PEM bytes, as read
    from the configured file) and ``domain``."""

    privkey: bytes | None = None
    domain: str = ""
    selector: str = "default"
    min_key_bits: int = 1024  # shorter verified keys give "policy"


@dataclass(frozen=True)
class DkimResult:
    """One verified DKIM-Signature.  ``result`` is an RFC 8601 dkim result:
    pass, fail, neutral, temperror, permerror or policy (key too short)."""

    result: str
    domain: str = ""  # d=
    selector: str = ""  # s=
    identity: str | None = None  # i=, None when the signature has none
    bits: int = 0  # public key size, 0 when no key was loaded
    reason: str = ""  # one line, for logs and reason=


class DkimError(ValueError):
    """Signing is impossible (no key or domain, bad key, no From header)."""


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("ascii", "backslashreplace")
    return "" if value is None else str(value)


def _pick_record(records: Sequence[bytes]) -> bytes | None:
    """The DKIM key record among a name's TXT records (``v=DKIM1`` first)."""
    for r in records:
        if r.lstrip().startswith(b"v=DKIM1"):
            return r
    return records[0] if records else None


def _verify_one(d: dkim.DKIM, idx: int, txt: TxtLookup, min_key_bits: int) -> DkimResult:
    """Signature ``idx`` of the message parsed into ``d`` (reused: parse once)."""
    looked_up: list[bytes | None] = []

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        qname = _text(name).rstrip(".")
        record = _pick_record(txt(qname))
        looked_up.append(record)
        return record

    d.pk, d.keysize, d.signature_fields = None, 0, {}
    try:
        ok = bool(d.verify(idx=idx, dnsfunc=dnsfunc))
    except DnsTempError as e:
        return _result(d, "temperror", f"DNS: {e}" if str(e) else "DNS temporary error")
    except dkim.ValidationError as e:
        # Before the key lookup: a malformed signature; after it: a body hash mismatch.
        return _result(d, "fail" if looked_up else "permerror", str(e))
    except dkim.KeyFormatError as e:
        if d.keysize and d.keysize < min_key_bits:
            return _result(d, "policy", f"{d.keysize} bit key is too short")
        return _result(d, "permerror", str(e))
    except Exception as e:  # dkimpy on hostile input: never crash
        return _result(d, "permerror", f"{type(e).__name__}: {e}")
    if ok:
        return _result(d, "pass", "")
    if not looked_up or looked_up[-1] is None:
        return _result(d, "permerror", "no key record")
    if d.pk is None:
        return _result(d, "permerror", "bad key record")
    return _result(d, "fail", "signature did not verify")


def _result(d: dkim.DKIM, result: str, reason: str) -> DkimResult:
    sig = d.signature_fields or {}
    identity = sig.get(b"i")
    return DkimResult(result, _text(sig.get(b"d")).lower(), _text(sig.get(b"s")),
                      None if identity is None else _text(identity),
                      int(d.keysize or 0), header_safe(reason.splitlines()[0] if reason else ""))


def verify_all(message: bytes, resolver_txt: TxtLookup,
               min_key_bits: int = 1024) -> tuple[DkimResult, ...]:
    """Verify every DKIM-Signature of ``message``, topmost first; ``()`` when
    there is none.  ``resolver_txt`` is ``Resolver.txt`` (names without the
    trailing dot)."""
    head = message.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    if b"dkim-signature" not in head.lower():
        return ()  # unsigned (or unparsable and unsigned): skip dkimpy's parse
    try:
        d = dkim.DKIM(message, minkey=min_key_bits)
        count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
    except Exception as e:  # unparsable message
        return (DkimResult("permerror", reason=header_safe(f"{type(e).__name__}: {e}")),)
    return tuple(_verify_one(d, i, resolver_txt, min_key_bits) for i in range(count))


def authres_items(results: Sequence[DkimResult]) -> list[str]:
    """Authentication-Results method items, one per signature, e.g.
    ``dkim=pass header.d=example.com header.s=sel header.i=@example.com``
    (``reason="..."`` for a non-pass); ``["dkim=none"]`` without signatures."""
    if not results:
        return ["dkim=none"]
    items = []
    for r in results:
        parts = [f"dkim={r.result}"]
        if r.reason and r.result != "pass":
            parts.append(f'reason="{_quoted(r.reason)}"')
        if r.domain:
            parts.append(f"header.d={pvalue(r.domain)}")
        if r.selector:
            parts.append(f"header.s={pvalue(r.selector)}")
        if r.identity:
            parts.append(f"header.i={pvalue(r.identity)}")
        items.append(" ".join(parts))
    return items


def _quoted(text: str) -> str:
    return header_safe(text, 200).replace("\\", "\\\\").replace('"', '\\"')


def sign(message: bytes, settings: DkimSettings) -> str:
    """The DKIM-Signature header *value* (no name; folded with ``\\n`` + tab,
    as the milter's ``insheader`` wants) for ``message``: rsa-sha256,
    relaxed/simple, ``i=@domain``, over dkimpy's default header set (those of
    From, Sender, Reply-To, Subject, Date, Message-ID, To, Cc, MIME-Version,
    Content-Type, ... that are present; From signed twice against additions).
    Raises :class:`DkimError` without a key or domain, or when dkimpy refuses."""
    if not settings.privkey or not settings.domain:
        raise DkimError("DKIM signing needs [dkim] privkey and domain")
    try:
        header: bytes = dkim.sign(message, settings.selector.encode("ascii"),
                                  settings.domain.encode("ascii"), settings.privkey,
                                  canonicalize=(b"relaxed", b"simple"))
    except (dkim.DKIMException, ValueError, UnicodeError) as e:
        raise DkimError(f"DKIM signing failed: {header_safe(str(e), 200)}") from e
    name, _, value = header.decode("ascii").partition(":")
    if name.strip().lower() != "dkim-signature":
        raise DkimError("DKIM signing failed: unexpected header from dkimpy")
    return value.strip().replace("\r\n", "\n")
