"""DMARC aggregate reports: the rows the pipeline counts (disposition and
override reasons), the XML of a report, and ``bms dmarc report`` run as a
command against a SQLite state store."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import asdict
from pathlib import Path

import pytest
from fakes import FakeAccess, FakeClock, FakeStore

from bmslib.policy.decision import AccessKind, AccessValue
from bmslib.policy.dkim import DkimResult
from bmslib.policy.dmarc import DmarcOutcome
from bmslib.policy.dmarcrecord import parse_record
from bmslib.policy.dmarcreport import DAY, ReportRow, merge, report_row, report_xml
from bmslib.state.sqlite import SqliteStore

from .test_dmarc import run_session

REPO = Path(__file__).resolve().parents[2]
RECORD = parse_record("v=DMARC1; p=reject; sp=quarantine; pct=50")


def row(**kw: object) -> ReportRow:
    base = dict(policy_domain="reject.example", header_from="reject.example",
                source_ip="198.51.100.9", disposition="reject", dkim="fail", spf="fail")
    return ReportRow(**{**base, **kw})  # type: ignore[arg-type]


def test_row_of_an_outcome_and_its_key_round_trip() -> None:
    outcome = DmarcOutcome("fail", "www.reject.example", "quarantine", "quarantine",
                           "unaligned", "pass", RECORD, policy_domain="reject.example")
    r = report_row(outcome, "192.0.2.1", "quarantine", "", "other.example", "pass",
                   (DkimResult("pass", "reject.example", "s1"), DkimResult("fail")))
    assert r is not None
    assert (r.policy_domain, r.header_from, r.dkim, r.spf, r.p, r.sp, r.pct) == (
        "reject.example", "www.reject.example", "pass", "fail", "reject", "quarantine", 50)
    assert r.dkim_results == (("reject.example", "s1", "pass"),)
    assert ReportRow.from_key(r.key()) == r
    # The stored key keeps the format of earlier versions (rows counted
    # before an upgrade still merge with new ones).
    assert r.key() == json.dumps(asdict(r), separators=(",", ":"), sort_keys=True)
    assert ReportRow.from_key("not json") is None and ReportRow.from_key("{}") is None
    assert report_row(DmarcOutcome("none", "x.example"), "", "none", "", "", "", ()) is None


def test_report_xml_has_the_rfc_7489_structure() -> None:
    rows = [(row(), 3), (row(disposition="none", reason="trusted_forwarder",
                               dkim_results=(("fwd.example", "s", "policy"),)), 1)]
    xml = report_xml("reject.example", rows, 20000 * DAY, 20001 * DAY, "mx.example.com",
                     "dmarc@example.com", "mx!reject.example!1!2")
    root = ET.fromstring(xml)
    assert xml.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    assert root.tag == "feedback"
    assert root.findtext("report_metadata/org_name") == "mx.example.com"
    assert root.findtext("report_metadata/date_range/begin") == str(20000 * DAY)
    assert root.findtext("report_metadata/date_range/end") == str(20001 * DAY - 1)
    assert root.findtext("policy_published/domain") == "reject.example"
    assert root.findtext("policy_published/p") == "none"
    records = root.findall("record")
    assert [r.findtext("row/count") for r in records] == ["3", "1"]
    assert records[0].findtext("row/policy_evaluated/disposition") == "reject"
    assert records[1].findtext("row/policy_evaluated/reason/type") == "trusted_forwarder"
    assert records[1].findtext("auth_results/dkim/result") == "fail"  # policy -> fail
    assert records[0].findtext("identifiers/header_from") == "reject.example"


def test_merge_sums_days_and_groups_by_policy_domain() -> None:
    a, b = row(), row(policy_domain="quar.example", header_from="quar.example")
    got = merge([(1, a.key(), 2), (2, a.key(), 3), (2, b.key(), 1), (2, "junk", 9)])
    assert got == {"reject.example": [(a, 5)], "quar.example": [(b, 1)]}


@pytest.mark.parametrize(("domain", "access", "dry_run", "disposition", "reason"), [
    ("reject.example", {}, False, "reject", ""),
    ("reject.example", {("DMARC-Reject", "reject.example"): AccessValue(AccessKind.OK)},
     False, "none", "local_policy"),
    ("reject.example", {}, True, "none", "local_policy"),
    ("quar.example", {}, False, "quarantine", ""),
    ("half.example", {}, False, "quarantine", "sampled_out"),
    ("other.example", {}, False, "none", ""),  # a pass: SPF aligned
])
def test_pipeline_counts_one_row_per_evaluated_message(
        domain: str, access: dict[tuple[str, str], AccessValue], dry_run: bool,
        disposition: str, reason: str) -> None:
    store = FakeStore()
    run_session(domain, spf="pass", dry_run=dry_run, access=FakeAccess(access), store=store,
                rand=0.9)
    [(day, key)] = list(store.reports)
    assert day == int(FakeClock().now() // DAY)
    r = ReportRow.from_key(key)
    assert r is not None and (r.disposition, r.reason) == (disposition, reason)
    assert r.source_ip == "198.51.100.9" and r.spf_domain == "other.example"
    assert r.spf == ("pass" if domain == "other.example" else "fail")


def test_no_row_without_a_record_and_a_store_that_is_down_loses_only_the_count() -> None:
    store = FakeStore()
    run_session("nodmarc.example", store=store)
    assert store.reports == {}
    store.down = True
    result = run_session("reject.example", store=store)
    assert result.decision.final  # the policy still applies


def test_bms_dmarc_report_command_writes_one_file_per_domain(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    store = SqliteStore(state)
    day = 20401  # 2025-11-09
    store.report_count(day, row().key(), 4)
    store.report_count(day + 1, row().key(), 1)
    store.report_count(day, row(policy_domain="quar.example", header_from="quar.example",
                                disposition="quarantine").key())
    store.close()
    cfg = tmp_path / "pymilter.cfg"
    cfg.write_text(f"[state]\nbackend = sqlite:{state}\n[dmarc]\nreport_org = mx.example.com\n"
                   "report_email = dmarc@example.com\n")
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "bms.py"), "dmarc", "report", "-c", str(cfg),
           "--from", "2025-11-09", "--to", "2025-11-10", "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    begin = day * DAY
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"mx.example.com!quar.example!{begin}!{begin + 2 * DAY - 1}.xml",
                     f"mx.example.com!reject.example!{begin}!{begin + 2 * DAY - 1}.xml"]
    assert done.stdout.splitlines() == [str(out / n) for n in names]
    root = ET.fromstring((out / names[1]).read_bytes())
    assert root.findtext("record/row/count") == "5"
    assert root.findtext("report_metadata/email") == "dmarc@example.com"
    done = subprocess.run([*cmd[:-2], "-o", str(tmp_path / "none"), "--domain", "x.example"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "no DMARC data" in done.stderr
    done = subprocess.run([*cmd[:4], "--from", "yesterday"], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 2 and "expected YYYY-MM-DD" in done.stderr
    done = subprocess.run([sys.executable, str(REPO / "bms.py"), "dmarc"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "usage: bms dmarc" in done.stderr and "ACTION" in done.stderr
