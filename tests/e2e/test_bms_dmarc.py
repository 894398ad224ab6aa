"""DMARC end to end: a real bms daemon behind real Postfix and real sendmail
(``-bD``), NSD serving DMARC records (p=reject/quarantine/none, sp, np, pct,
a domain delegated to a dead nameserver) and a DKIM key made for this run.

The client is CLIENT_IP with MAIL FROM a@pass.test (SPF pass, so SPF is
aligned only for From: pass.test); other From: domains pass DMARC only
through a DKIM signature the test makes with dkimpy.  Each case checks the
SMTP reply, the delivered Authentication-Results, the quarantine (Postfix:
the hold queue; sendmail: the ``q`` record of its
``hf`` file) and the log line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import dkim
import pytest
from dkimkeys import keypair
from testbed import Postfix
from testbed.bms_host import txt_rdata
from testbed.bms_mta import Mta, sendmail  # noqa: F401 - sendmail -bD in front of bms
from testbed.bmsd import BmsDaemon
from testbed.mail import make_message, new_message_id
from testbed.milter import free_port
from testbed.nsd import CLIENT_IP, CLIENT_PTR, Nsd, default_zones
from testbed.quarantine import assert_quarantined

pytestmark = pytest.mark.e2e

RECEIVER = "mx.example.test"
RCPT = "rcpt@example.test"
SENDER = "a@pass.test"  # SPF pass for CLIENT_IP
SELECTOR = "dmarc2026"

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
}


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    return keypair(tmp_path_factory.mktemp("dmarc"), "e2e-dmarc")


@pytest.fixture(scope="module")
def dmarc_nsd(nsd: Nsd, key: tuple[bytes, bytes]) -> Iterator[Nsd]:
    """The shared test zones plus the DMARC records and this run's DKIM key
    (for dreject.test), on a port of its own."""
    zones = default_zones()
    zones["test"] += [*ZONE, f"{SELECTOR}._domainkey.dreject TXT {txt_rdata(key[1])}"]
    with Nsd(zones, port=free_port()) as server:
        yield server


@pytest.fixture(scope="module")
def bms(dmarc_nsd: Nsd) -> Iterator[BmsDaemon]:
    sections = {
        "milter": {"internal_connect": "10.11.12.0/24", "internal_domains": "example.test"},
        "dns": {"nameservers": dmarc_nsd.nameserver, "timeout": "1", "lifetime": "2"},
    }
    with BmsDaemon(sections, ACCESS) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def postfix(bms: BmsDaemon) -> Iterator[Postfix]:
    with Postfix(milters=bms.postfix_spec) as pf:
        yield pf


def flat(value: str | None) -> str:
    return re.sub(r"\s+", " ", value or "").strip()


@pytest.mark.parametrize("name", list(CASES))
def test_dmarc_policy_outcome(name: str, mta: Mta, bms: BmsDaemon, key: tuple[bytes, bytes],
                              request: pytest.FixtureRequest) -> None:
    case = CASES[name]
    mid = new_message_id(f"dmarc-{name}-{mta.name}")
    author = f"author@{case.author}"
    _, data = make_message(f"dmarc {name}", sender=author, to=RCPT, message_id=mid)
    if case.signed:
        sig = dkim.sign(data, SELECTOR.encode(), case.author.encode(), key[0],
                        include_headers=[b"from", b"to", b"subject", b"message-id"],
                        linesep=b"\r\n")
        data = sig + data
    client = mta.connect(CLIENT_IP)
    client.ehlo(CLIENT_PTR)
    t = client.transaction(SENDER, [RCPT], data)
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
