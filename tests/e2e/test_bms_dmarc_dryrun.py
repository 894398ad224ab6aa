"""DMARC in a dry run, through real Postfix and sendmail: a message that
p=reject would refuse and one p=quarantine would hold are both delivered,
with ``DRYRUN REJECT: DMARC ...`` / ``DRYRUN QUARANTINE: DMARC ...`` logged
and the ``dmarc=fail`` item in Authentication-Results."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from testbed.bms_mta import Mta, postfix, sendmail  # noqa: F401 - the MTAs in front of bms
from testbed.bmsd import BmsDaemon
from testbed.mail import make_message, new_message_id
from testbed.nsd import CLIENT_IP, CLIENT_PTR, Nsd, nsd_with

pytestmark = pytest.mark.e2e

RCPT = "rcpt@example.test"
ZONE = ['_dmarc.dreject TXT "v=DMARC1; p=reject"', '_dmarc.dquar TXT "v=DMARC1; p=quarantine"']


@pytest.fixture(scope="module")
def bms(nsd: Nsd) -> Iterator[BmsDaemon]:
    with nsd_with(ZONE) as server:
        sections = {
            "milter": {"internal_domains": "example.test", "dry_run": "1"},
            "dns": {"nameservers": server.nameserver, "timeout": "1", "lifetime": "2"},
        }
        with BmsDaemon(sections, "SPF-Pass: OK\n") as daemon:
            yield daemon


@pytest.mark.parametrize(("author", "verb"), [("dreject.test", "REJECT"),
                                              ("dquar.test", "QUARANTINE")])
def test_dry_run_delivers_and_logs_what_dmarc_would_do(author: str, verb: str, mta: Mta,
                                                       bms: BmsDaemon) -> None:
    mid = new_message_id(f"dmarc-dry-{author}-{mta.name}")
    _, data = make_message("dry run", sender=f"author@{author}", to=RCPT, message_id=mid)
    client = mta.connect(CLIENT_IP)
    client.ehlo(CLIENT_PTR)
    t = client.transaction("a@pass.test", [RCPT], data)
    assert t.data is not None and t.data.code == 250, t
    ar = re.sub(r"\s+", " ", mta.stored(t, mid).get("Authentication-Results") or "")
    v = verb.lower()
    assert f"dmarc=fail (p={v} sp={v} pct=100 dis={verb}) header.from={author}" in ar, ar
    logged = [m for m in bms.messages()
              if m.startswith(f"DRYRUN {verb}: DMARC fail") and f"header.from={author}" in m]
    assert logged, bms.messages()[-6:]
    assert not any(m.startswith(("REJECT: DMARC", "QUARANTINE: DMARC"))
                   for m in bms.messages())
