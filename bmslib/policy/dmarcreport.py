"""DMARC aggregate-report data (RFC 7489 §7.2, appendix C): one counted row
per message evaluated against a published record, and the XML of a report
for one policy domain and period.

A row is kept in the state store as an opaque key (compact JSON: policy
domain, header.from, source IP, the disposition applied, the aligned DKIM
and SPF verdicts, the published policy and the raw SPF/DKIM results) with a
count per UTC day (:class:`~bmslib.interfaces.ReportCounters`).  Keys that
cannot be read back (a store shared with another version) are skipped.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields

from .dkim import DkimResult
from .dmarc import DmarcOutcome

DAY = 86400


@dataclass(frozen=True)
class ReportRow:
    policy_domain: str
    header_from: str
    source_ip: str
    disposition: str  # none, quarantine, reject: what was done
    dkim: str  # pass / fail (aligned)
    spf: str  # pass / fail (aligned)
    p: str = "none"
    sp: str = "none"
    pct: int = 100
    adkim: str = "r"
    aspf: str = "r"
    reason: str = ""  # policy override: local_policy, trusted_forwarder, sampled_out
    spf_domain: str = ""
    spf_result: str = "none"
    dkim_results: tuple[tuple[str, str, str], ...] = field(default=())  # (d, s, result)

    def key(self) -> str:
        # asdict() deep-copies every field (a third of the report row's cost
        # per message); the fields are str, int and tuples of str already.
        data = {name: getattr(self, name) for name in _FIELDS}
        return json.dumps(data, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_key(cls, key: str) -> ReportRow | None:
        try:
            data = json.loads(key)
            data["dkim_results"] = tuple(tuple(map(str, r)) for r in data["dkim_results"])
            return cls(**data)
        except (ValueError, TypeError, KeyError):
            return None


_FIELDS = tuple(f.name for f in fields(ReportRow))


def report_row(outcome: DmarcOutcome, source_ip: str, disposition: str, reason: str,
               spf_domain: str, spf_result: str, dkim: Sequence[DkimResult]) -> ReportRow | None:
    """The row of one evaluated message; None without a published record."""
    r = outcome.record
    if r is None or outcome.result not in ("pass", "fail"):
        return None
    return ReportRow(
        outcome.policy_domain or outcome.domain, outcome.domain, source_ip, disposition,
        "pass" if outcome.dkim == "pass" else "fail",
        "pass" if outcome.spf == "pass" else "fail",
        r.p, r.sp, r.pct, r.adkim, r.aspf, reason, spf_domain.lower(), spf_result or "none",
        tuple((d.domain, d.selector, d.result) for d in dkim if d.domain))


def _sub(parent: ET.Element, tag: str, text: object = None) -> ET.Element:
    e = ET.SubElement(parent, tag)
    if text is not None:
        e.text = str(text)
    return e


def _dkim_result(result: str) -> str:
    """The RFC 7489 DKIMResultType: policy (key too short) counts as fail."""
    return result if result in ("none", "pass", "fail", "neutral", "temperror",
                                "permerror") else "fail"


def report_xml(domain: str, rows: Iterable[tuple[ReportRow, int]], begin: int, end: int,
               org_name: str, email: str, report_id: str) -> bytes:
    """The aggregate report for policy domain ``domain`` over ``[begin, end)``
    (seconds since the epoch); the published policy is the latest row's."""
    rows = list(rows)
    feedback = ET.Element("feedback")
    _sub(feedback, "version", "1.0")
    meta = _sub(feedback, "report_metadata")
    _sub(meta, "org_name", org_name)
    _sub(meta, "email", email)
    _sub(meta, "report_id", report_id)
    dates = _sub(meta, "date_range")
    _sub(dates, "begin", begin)
    _sub(dates, "end", end - 1)
    policy = _sub(feedback, "policy_published")
    latest = rows[-1][0] if rows else ReportRow(domain, domain, "", "none", "fail", "fail")
    _sub(policy, "domain", domain)
    for tag in ("adkim", "aspf", "p", "sp", "pct"):
        _sub(policy, tag, getattr(latest, tag))
    for row, count in rows:
        record = _sub(feedback, "record")
        r = _sub(record, "row")
        _sub(r, "source_ip", row.source_ip)
        _sub(r, "count", count)
        evaluated = _sub(r, "policy_evaluated")
        _sub(evaluated, "disposition", row.disposition)
        _sub(evaluated, "dkim", row.dkim)
        _sub(evaluated, "spf", row.spf)
        if row.reason:
            _sub(_sub(evaluated, "reason"), "type", row.reason)
        _sub(_sub(record, "identifiers"), "header_from", row.header_from)
        auth = _sub(record, "auth_results")
        for d, s, result in row.dkim_results:
            dk = _sub(auth, "dkim")
            _sub(dk, "domain", d)
            if s:
                _sub(dk, "selector", s)
            _sub(dk, "result", _dkim_result(result))
        spf = _sub(auth, "spf")
        _sub(spf, "domain", row.spf_domain)
        _sub(spf, "scope", "mfrom")
        _sub(spf, "result", row.spf_result)
    ET.indent(feedback)
    data: bytes = ET.tostring(feedback, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def merge(counts: Iterable[tuple[int, str, int]]) -> dict[str, list[tuple[ReportRow, int]]]:
    """Per policy domain, the rows of a period with their counts summed over its days."""
    totals: dict[ReportRow, int] = {}
    for _, key, count in counts:
        row = ReportRow.from_key(key)
        if row is not None:
            totals[row] = totals.get(row, 0) + count
    out: dict[str, list[tuple[ReportRow, int]]] = {}
    for row, count in totals.items():
        out.setdefault(row.policy_domain, []).append((row, count))
    return out
