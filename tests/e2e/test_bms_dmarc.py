"""DMARC and ARC end to end: a real bms daemon behind real Postfix and real
sendmail (``-bD``), NSD serving DMARC records (p=reject/quarantine/none, sp,
np, pct, a domain delegated to a dead nameserver) and a DKIM/ARC key made
for this run.  bms seals what it delivers ([arc]); a forwarder's ARC chain
(made by the test with dkimpy) rescues a DMARC failure when the forwarder is
in ``trusted_arc_sealers``; every delivered message's chain, ending in our
seal, is verified with dkimpy.

The client is CLIENT_IP with MAIL FROM a@pass.test (SPF pass, so SPF is
aligned only for From: pass.test); other From: domains pass DMARC only
through a DKIM signature the test makes with dkimpy.  Each case checks the
SMTP reply, the delivered Authentication-Results, the quarantine (Postfix:
the hold queue; sendmail: the ``q`` record of its
``hf`` file) and the log line.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dkim
import pytest
from dkimkeys import keypair
from testbed.bms_host import dkim_dnsfunc, txt_rdata
from testbed.bms_mta import Mta, postfix, sendmail  # noqa: F401 - the MTAs in front of bms
from testbed.bmsd import BmsDaemon
from testbed.mail import StoredMessage, make_message, new_message_id
from testbed.nsd import CLIENT_IP, CLIENT_PTR, Nsd, nsd_with
from testbed.postfix import Postfix
from testbed.quarantine import assert_quarantined
from testbed.smtp import SmtpClient

pytestmark = pytest.mark.e2e

RECEIVER = "mx.example.test"
RCPT = "rcpt@example.test"
SENDER = "a@pass.test"  # SPF pass for CLIENT_IP
SELECTOR = "dmarc2026"
TRUSTED = "fwd.test"  # [dmarc] trusted_arc_sealers

ACCESS = """\
SPF-Pass:                 OK
DMARC-Reject:dok.test     OK
DMARC-Reject:derr.test    ERROR:"550 5.7.1 Mail from derr.test must pass DMARC"
DMARC-None:dnone2.test    REJECT
"""

ZONE = [
    '_dmarc.pass TXT "v=DMARC1; p=reject"',
    '_dmarc.dreject TXT "v=DMARC1; p=reject; rua=mailto:dmarc@dreject.test"',
    '_dmarc.dquar TXT "v=DMARC1; p=quarantine"',
    '_dmarc.dnone TXT "v=DMARC1; p=none"',
    '_dmarc.dnone2 TXT "v=DMARC1; p=none"',
    '_dmarc.dsub TXT "v=DMARC1; p=none; sp=reject; np=quarantine"',
    "www.dsub A 192.0.2.1",
    '_dmarc.dpct TXT "v=DMARC1; p=reject; pct=0"',  # never sampled: quarantine
    '_dmarc.dok TXT "v=DMARC1; p=reject"',
    '_dmarc.derr TXT "v=DMARC1; p=reject"',
    '_dmarc.dtwo TXT "v=DMARC1; p=reject"',
    '_dmarc.dtwo TXT "v=DMARC1; p=none"',
]


@dataclass(frozen=True)
class Case:
    author: str  # the From: domain
    result: str  # dmarc= in A-R and the log
    code: int = 250  # the reply to the end of DATA
    text: str = ""  # in the reply text, or in the A-R dmarc item when delivered
    quarantine: bool = False
    signed: bool = False  # DKIM-signed by the author domain
    sealer: str = ""  # ARC-sealed by this forwarder before it reaches us
    tamper: bool = False  # the body changed after the forwarder's seal
    sender: str = SENDER  # MAIL FROM


CASES = {
    "spf-aligned-pass": Case("pass.test", "pass",
                             text="(p=reject sp=reject pct=100 dis=NONE)"),
    "dkim-aligned-pass": Case("dreject.test", "pass", signed=True),
    "reject": Case("dreject.test", "fail", 550, "fails the DMARC policy of dreject.test"),
    "quarantine": Case("dquar.test", "fail", quarantine=True),
    "none": Case("dnone.test", "fail", text="(p=none sp=none pct=100 dis=NONE)"),
    "sp-reject-for-a-subdomain": Case("www.dsub.test", "fail", 550, "5.7.1"),
    "np-quarantine-for-a-missing-subdomain": Case("ghost.dsub.test", "fail", quarantine=True),
    "pct-0-is-quarantine": Case("dpct.test", "fail", quarantine=True,
                                text="(p=reject sp=reject pct=0 dis=QUARANTINE)"),
    "access-OK-overrides-reject": Case("dok.test", "fail",
                                       text="(p=reject sp=reject pct=100 dis=REJECT)"),
    "access-ERROR": Case("derr.test", "fail", 550, "Mail from derr.test must pass DMARC"),
    "access-REJECT-for-none": Case("dnone2.test", "fail", 550, "5.7.1"),
    "no-record": Case("none.test", "none"),
    "two-records-permerror": Case("dtwo.test", "permerror", text="(2 DMARC records)"),
    "dns-timeout-temperror": Case("temperror.test", "temperror", text="(DNS timeout)"),
    "arc-trusted-sealer-rescues": Case("dreject.test", "fail", sealer=TRUSTED,
                                       text="(p=reject sp=reject pct=100 dis=REJECT)"),
    "arc-untrusted-sealer": Case("dreject.test", "fail", 550, "fails the DMARC policy",
                                 sealer="other.test"),
    "arc-broken-chain": Case("dreject.test", "fail", 550, "fails the DMARC policy",
                             sealer=TRUSTED, tamper=True),
    # SPF fails for fail.test: with trusted sealers the reject waits for the chain.
    "arc-trusted-sealer-rescues-spf-fail": Case("none.test", "none", sealer=TRUSTED,
                                                sender="a@fail.test"),
    "spf-fail-untrusted-sealer": Case("none.test", "none", 550, "SPF fail",
                                      sealer="other.test", sender="a@fail.test"),
}


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, bytes]:
    """(private key file, PEM, key record): DKIM for dreject.test, ARC seals
    of fwd.test and other.test, and our own seal (example.test)."""
    tmp = tmp_path_factory.mktemp("dmarc")
    pem, record = keypair(tmp, "e2e-dmarc")
    return tmp / "e2e-dmarc.pem", pem, record


@pytest.fixture(scope="module")
def dmarc_nsd(nsd: Nsd, key: tuple[Path, bytes, bytes]) -> Iterator[Nsd]:
    rdata = txt_rdata(key[2])
    keys = [f"{SELECTOR}._domainkey.{d} TXT {rdata}" for d in ("dreject", "fwd", "other",
                                                               "example")]
    with nsd_with([*ZONE, *keys]) as server:
        yield server


@pytest.fixture(scope="module")
def bms(dmarc_nsd: Nsd, key: tuple[Path, bytes, bytes]) -> Iterator[BmsDaemon]:
    sections = {
        "milter": {"internal_connect": "10.11.12.0/24", "internal_domains": "example.test"},
        "dns": {"nameservers": dmarc_nsd.nameserver, "timeout": "1", "lifetime": "2"},
        "dmarc": {"trusted_arc_sealers": TRUSTED},
        "arc": {"privkey": str(key[0]), "domain": "example.test", "selector": SELECTOR},
    }
    with BmsDaemon(sections, ACCESS) as daemon:
        yield daemon


def forward(data: bytes, sealer: str, pem: bytes) -> bytes:
    """``data`` as the forwarder ``sealer`` passes it on: its A-R and ARC set."""
    ar = (f"Authentication-Results: {sealer}; arc=none; spf=pass "
          f"smtp.mailfrom=author@dreject.test\r\n").encode()
    return b"".join(dkim.arc_sign(ar + data, SELECTOR.encode(), sealer.encode(), pem,
                                  sealer.encode())) + ar + data


def raw(m: StoredMessage) -> bytes:
    head = "".join(f"{n}: {v}\r\n".replace("\r\n", "\n").replace("\n", "\r\n")
                   for n, v in m.headers)
    return head.encode("utf-8", "surrogateescape") + b"\r\n" + m.body


def flat(value: str | None) -> str:
    return re.sub(r"\s+", " ", value or "").strip()


@pytest.mark.parametrize("name", list(CASES))
def test_dmarc_policy_outcome(name: str, mta: Mta, bms: BmsDaemon,
                              key: tuple[Path, bytes, bytes], dmarc_nsd: Nsd,
                              request: pytest.FixtureRequest) -> None:
    case = CASES[name]
    mid = new_message_id(f"dmarc-{name}-{mta.name}")
    author = f"author@{case.author}"
    _, data = make_message(f"dmarc {name}", sender=author, to=RCPT, message_id=mid)
    if case.signed:
        sig = dkim.sign(data, SELECTOR.encode(), case.author.encode(), key[1],
                        include_headers=[b"from", b"to", b"subject", b"message-id"],
                        linesep=b"\r\n")
        data = sig + data
    if case.sealer:
        data = forward(data, case.sealer, key[1])
    if case.tamper:
        data = data.replace(b"Hello.", b"Hello!")
    client = mta.connect(CLIENT_IP)
    client.ehlo(CLIENT_PTR)
    t = client.transaction(case.sender, [RCPT], data)
    assert t.mail.code == 250 and t.data is not None, t
    if case.code != 250:
        assert t.data.code == case.code, (name, str(t.data))
        assert case.text in t.data.text, (name, str(t.data))
    elif case.quarantine:
        assert t.data.code == 250, (name, str(t.data))
        assert_quarantined(mta, request, t, "DMARC fail")
    else:
        assert t.data.code == 250, (name, str(t.data))
        m = mta.stored(t, mid)
        ar = flat(m.get("Authentication-Results"))
        assert ar.startswith(f"{RECEIVER};"), ar
        item = next((i.strip() for i in ar.split(";") if i.strip().startswith("dmarc=")), "")
        assert item.startswith(f"dmarc={case.result}"), ar
        assert item.endswith(f"header.from={case.author}"), ar
        assert case.text in item, ar
        if case.signed:
            assert f"dkim=pass header.d={case.author}" in ar, ar
        arc = "arc=pass (i=1 d=fwd.test)" if case.sealer else "arc=none"
        if case.sender != SENDER:
            assert f"spf=fail smtp.mailfrom={case.sender}" in ar, ar
            bms.wait_log("SPF fail")
            assert any(m.endswith(f"let through: forwarded, ARC pass sealed by trusted "
                                  f"{TRUSTED}") for m in bms.messages()), bms.messages()[-8:]
        assert arc in ar, ar
        # Our seal over what was delivered, verified with dkimpy against NSD.
        host, port = dmarc_nsd.nameserver.split(":")
        cv, chain, why = dkim.arc_verify(raw(m), dnsfunc=dkim_dnsfunc(host, int(port)))
        assert cv == dkim.CV_Pass, why
        assert chain[0]["as-domain"] == b"example.test"
        assert len(chain) == (2 if case.sealer else 1)
    if case.sender != SENDER and case.code == 550:  # SPF refused it before DMARC
        assert any(m.startswith("REJECT: SPF fail") and case.sender in m
                   for m in bms.messages()), bms.messages()[-6:]
        return
    # The line was logged before the reply; the last one for this domain is ours.
    lines = [m for m in bms.messages() if m.startswith("DMARC: ")
             and f"header.from={case.author} " in m]
    assert lines and lines[-1].startswith(f"DMARC: {case.result} "), lines
    if case.code == 550:
        assert any(m.startswith("REJECT: DMARC fail") and f"header.from={case.author}" in m
                   for m in bms.messages()), bms.messages()[-5:]
    if case.quarantine:
        assert any(m.startswith("QUARANTINE: DMARC fail") and f"header.from={case.author}"
                   in m for m in bms.messages()), bms.messages()[-5:]
    if case.sealer == TRUSTED and not case.tamper and case.result == "fail":
        assert lines[-1].endswith(f"(forwarded: ARC pass sealed by trusted {TRUSTED})"), lines


def report_rows(bms: BmsDaemon, out: Path, domain: str) -> tuple[ET.Element, dict[
        tuple[str | None, str], int]]:
    """``bms dmarc report`` of today over the daemon's own state store: the
    XML of ``domain`` and its counts per (disposition, reason)."""
    today = time.strftime("%Y-%m-%d", time.gmtime())
    done = subprocess.run([sys.executable, "-m", "bms", "dmarc", "report", "-c", str(bms.cfg),
                           "--from", today, "-o", str(out)], capture_output=True,
                          text=True, check=False, cwd=bms.dir)
    assert done.returncode == 0, done.stderr
    files = {p.name.split("!")[1]: p for p in out.iterdir()}
    assert domain in files, files
    root = ET.fromstring(files[domain].read_bytes())
    return root, {(r.findtext("row/policy_evaluated/disposition"),
                   r.findtext("row/policy_evaluated/reason/type") or ""): int(
                       r.findtext("row/count") or 0) for r in root.findall("record")}


def test_aggregate_report_of_the_day(bms: BmsDaemon, tmp_path: Path) -> None:
    """``bms dmarc report`` over the daemon's own state store, after the
    cases above ran through both MTAs (module order: it runs last but one).
    The counts wait in the daemon for up to a minute; a reload writes them."""
    start = len(bms.messages())
    bms.reload()
    bms.wait_log("RELOAD:", start=start)
    root, rows = report_rows(bms, tmp_path, "dreject.test")
    assert {"dreject.test", "dquar.test", "dsub.test", "pass.test"} <= {
        p.name.split("!")[1] for p in tmp_path.iterdir()}
    assert root.findtext("policy_published/p") == "reject"
    assert rows[("reject", "")] >= 4  # reject + untrusted sealer + broken chain, 2 MTAs
    assert rows[("none", "trusted_forwarder")] == 2
    assert all(r.findtext("row/source_ip") == CLIENT_IP for r in root.findall("record"))


def test_counts_reach_the_store_when_the_daemon_stops(
        bms: BmsDaemon, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The counts of messages since the last write are written when bms
    stops (SIGTERM); the module's last test, since it stops the daemon."""
    pf: Postfix = request.getfixturevalue("postfix")
    _, before = report_rows(bms, tmp_path / "before", "dreject.test")
    start = len(bms.messages())
    for n in range(2):
        _, data = make_message("dmarc after the reload", sender="author@dreject.test",
                               to=RCPT, message_id=new_message_id(f"dmarc-stop-{n}"))
        client = SmtpClient("127.0.0.1", pf.port, source_address=(CLIENT_IP, 0))
        try:
            client.ehlo(CLIENT_PTR)
            t = client.transaction(SENDER, [RCPT], data)
        finally:
            client.close_politely()
        assert t.data is not None and t.data.code == 550, t
    assert sum(m.startswith("REJECT: DMARC fail") for m in bms.messages()[start:]) == 2
    assert bms.stop() == 0
    _, after = report_rows(bms, tmp_path / "after", "dreject.test")
    assert after[("reject", "")] == before[("reject", "")] + 2, (before, after)
