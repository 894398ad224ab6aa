"""DNS blocklists end to end: a real bms daemon behind real Postfix and real
sendmail (``-bD``), NSD serving an IP list with A and TXT records, a list
that only answers an error code (127.255.255.254), one whose answer code is
not configured, a list delegated to a dead nameserver (timeouts), and a
domain list (RHSBL) for the HELO name, the MAIL FROM and the From: domain.
Each case checks the SMTP reply, the quarantine or the delivered message,
and the log line."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from testbed.bms_mta import Mta, postfix, sendmail  # noqa: F401 - the MTAs in front of bms
from testbed.bmsd import BmsDaemon
from testbed.mail import make_message, new_message_id
from testbed.nsd import (
    CLIENT_IP,
    CLIENT_PTR,
    DYN_IP,
    DYN_PTR,
    FORWARDER_IP,
    INTERNAL_IP,
    Nsd,
    nsd_with,
)
from testbed.quarantine import assert_quarantined

pytestmark = pytest.mark.e2e

RCPT = "rcpt@example.test"
TXT = "Listed for spam, see http://bl.test/q?198.51.100.77"


def rev(ip: str) -> str:
    return ".".join(reversed(ip.split(".")))


ZONE = [
    f"{rev(FORWARDER_IP)}.bl A 127.0.0.2",
    f'{rev(FORWARDER_IP)}.bl TXT "{TXT}"',
    f"{rev(INTERNAL_IP)}.bl A 127.0.0.2",  # internal: never looked up
    f"{rev(CLIENT_IP)}.err A 127.255.255.254",  # the list's error code: ignored
    f"{rev(CLIENT_IP)}.codes A 127.0.0.9",  # not one of the configured codes
    f"{rev(DYN_IP)}.quar A 127.0.0.4",  # access: QUARANTINE
    "spammer.test.rhs A 127.0.0.2",
]
ZONES = ("err.test codes.test=127.0.0.2,127.0.0.3 bl.test quar.test=127.0.0.4 "
         "bl.temperror.test")
ACCESS = """\
SPF-Pass:          OK
SPF-None:          OK
SPF-Fail:          OK
DNSBL:quar.test    QUARANTINE
"""


@dataclass(frozen=True)
class Case:
    ip: str
    helo: str
    sender: str = "a@pass.test"
    author: str = "author@elsewhere.test"
    code: int = 250  # the reply to the end of DATA
    stage: str = "data"  # where a refusal comes: "data" (delayed reject) or "eom"
    text: str = ""
    log: str = ""  # a bms log line (prefix)
    quarantine: bool = False


CASES = {
    "listed-client-refused-with-txt": Case(
        FORWARDER_IP, "relay.forwarder.test", "a@forwarder.test", code=550,
        text=f"{FORWARDER_IP} is listed in bl.test", log=(
            f"REJECT: DNSBL client {FORWARDER_IP} listed in bl.test (127.0.0.2)")),
    "error-code-unlisted-code-and-timeout-deliver": Case(
        CLIENT_IP, CLIENT_PTR, log=f"DNSBL: err.test answered 127.255.255.254 for {CLIENT_IP}"),
    "access-QUARANTINE": Case(DYN_IP, DYN_PTR, quarantine=True,
                              log=f"DNSBL: DNSBL client {DYN_IP} listed in quar.test"),
    "internal-client-skipped": Case(INTERNAL_IP, "pc.example.test", "u@example.test"),
    "rhsbl-helo": Case(CLIENT_IP, "spammer.test", code=550,
                       text="spammer.test is listed in rhs.test",
                       log="REJECT: RHSBL HELO spammer.test listed in rhs.test (127.0.0.2)"),
    "rhsbl-mail-from": Case(CLIENT_IP, CLIENT_PTR, "a@spammer.test", code=550,
                            log="REJECT: RHSBL MAIL FROM spammer.test listed in rhs.test"),
    "rhsbl-from-header": Case(CLIENT_IP, CLIENT_PTR, author="x@spammer.test", code=550,
                              stage="eom",
                              log="REJECT: RHSBL From: spammer.test listed in rhs.test"),
}


@pytest.fixture(scope="module")
def bms(nsd: Nsd) -> Iterator[BmsDaemon]:
    with nsd_with(ZONE) as server:
        sections = {
            "milter": {"internal_connect": "10.11.12.0/24", "internal_domains": "example.test"},
            "dns": {"nameservers": server.nameserver, "timeout": "1", "lifetime": "2"},
            "dnsbl": {"zones": ZONES, "rhsbl": "rhs.test"},
        }
        with BmsDaemon(sections, ACCESS) as daemon:
            yield daemon


@pytest.mark.parametrize("name", list(CASES))
def test_blocklist_outcome(name: str, mta: Mta, bms: BmsDaemon,
                           request: pytest.FixtureRequest) -> None:
    case = CASES[name]
    start = len(bms.messages())
    mid = new_message_id(f"dnsbl-{name}-{mta.name}")
    _, data = make_message(f"dnsbl {name}", sender=case.author, to=RCPT, message_id=mid)
    client = mta.connect(case.ip)
    client.ehlo(case.helo)
    t = client.transaction(case.sender, [RCPT], data)
    assert t.mail.code == 250 and t.data is not None, t
    assert t.accepted == [RCPT], t  # a delayed reject: every RCPT logged
    if case.code != 250:
        assert t.data.code == case.code, (name, str(t.data))
        assert "5.7.1" in t.data.text and case.text in t.data.text, (name, str(t.data))
        if name == "listed-client-refused-with-txt":
            assert TXT in t.data.text, str(t.data)
    elif case.quarantine:
        assert t.data.code == 250, (name, str(t.data))
        assert_quarantined(mta, request, t, f"DNSBL client {case.ip} listed in")
    else:
        assert t.data.code == 250, (name, str(t.data))
        assert mta.stored(t, mid).message_id == mid
    if case.log:
        bms.wait_log(case.log, start=start)
    if name == "error-code-unlisted-code-and-timeout-deliver":
        bms.wait_log(f"DNSBL: bl.temperror.test: no answer for {CLIENT_IP}: ignored",
                     start=start)
    logged = bms.messages()[start:]
    if case.stage == "data" and case.code == 550:
        # the reject was decided at MAIL FROM and answered at DATA
        rcpt_at = next(i for i, m in enumerate(logged) if m.startswith("rcpt to"))
        reject_at = next(i for i, m in enumerate(logged) if m.startswith("REJECT: "))
        assert rcpt_at < reject_at, logged
    if name == "internal-client-skipped":
        assert not any("DNSBL" in m for m in logged), logged
