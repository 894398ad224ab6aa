"""The bms daemon's policy end to end: a real ``bms`` process (``python -m bms
-c …``) behind real Postfix and real sendmail (``-bD``), NSD serving the test
zone on 127.0.0.1:5353, and an SMTP sink on 127.0.0.25:25 standing in for
every sender domain's MX (it answers the CBV probes and receives the DSNs).

The SMTP client connects from 198.51.100.66 (``CLIENT_IP``: an outside host
with a proper PTR and HELO) or from 10.11.12.13 (``INTERNAL_IP``, in
``internal_connect``); the nsd fixture puts both addresses on ``lo``.
Each SPF result meets the access-file policy given for it: a default key per
result, and a per-domain key per result that overrides it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from testbed import Postfix
from testbed.bms_mta import Mta, sendmail  # noqa: F401 - sendmail -bD in front of bms
from testbed.bmsd import BmsDaemon
from testbed.mail import new_message_id
from testbed.nsd import CLIENT_IP, CLIENT_PTR, INTERNAL_IP, SINK_IP, Nsd
from testbed.smtpsink import SmtpSink

pytestmark = pytest.mark.e2e

RECEIVER = "mx.example.test"  # macro j of both MTAs (myhostname / $j)
RCPT = "rcpt@example.test"

ACCESS = """\
# The default for each result ...
SPF-Pass:                 OK
SPF-Fail:                 REJECT
SPF-Softfail:             DSN
SPF-Neutral:              CBV
SPF-None:                 OK
SPF-PermError:            ERROR:5.7.1:550 Your SPF record is broken: please fix it
SPF-TempError:            TEMPFAIL
# ... and a per-domain key for each result that overrides it.
SPF-Pass:include.test     CBV
SPF-Fail:forwarder.test   OK
SPF-Softfail:cbv.softfail.test   CBV
SPF-Neutral:err.neutral.test     ERROR:"550 5.7.1 Neutral is not good enough here"
SPF-None:nxdomain.test    REJECT
SPF-PermError:tworecords.test    OK
SPF-TempError:ok.temperror.test  OK
"""


@dataclass(frozen=True)
class Case:
    sender: str
    result: str  # the official SPF result in Received-SPF
    stage: str  # where the answer comes: "mail", "data" (delayed) or "eom"
    code: int  # the reply at that stage (250: delivered)
    text: str = ""  # in the reply text
    sink: str = ""  # what the sink saw: "probe", "dsn" or ""


CASES = {
    "pass-default-OK": Case("a@pass.test", "pass", "eom", 250),
    "pass-domain-CBV": Case("a@include.test", "pass", "eom", 250, sink="probe"),
    "fail-default-REJECT": Case("a@fail.test", "fail", "data", 550, "5.7.1"),
    "fail-domain-OK": Case("a@forwarder.test", "fail", "eom", 250),
    "softfail-default-DSN": Case("a@softfail.test", "softfail", "eom", 250, sink="dsn"),
    "softfail-domain-CBV-refused": Case("refused@cbv.softfail.test", "softfail", "eom", 550,
                                        "5.7.1 CBV: 550 5.1.1", sink="probe"),
    "neutral-default-CBV": Case("a@neutral.test", "neutral", "eom", 250, sink="probe"),
    "neutral-domain-ERROR": Case("a@err.neutral.test", "neutral", "data", 550,
                                 "5.7.1 Neutral is not good enough here"),
    "neutral-CBV-slow-sink": Case("a@slow.neutral.test", "neutral", "eom", 450,
                                  "4.2.0", sink="probe"),
    "none-default-OK": Case("a@none.test", "none", "eom", 250),
    "none-domain-REJECT": Case("a@nxdomain.test", "none", "data", 550, "5.7.1"),
    "permerror-default-ERROR": Case("a@permerror.test", "permerror", "data", 550,
                                    "5.7.1 Your SPF record is broken: please fix it"),
    "permerror-domain-OK": Case("a@tworecords.test", "permerror", "eom", 250),
    "temperror-default-TEMPFAIL": Case("a@temperror.test", "temperror", "mail", 451,
                                       "4.3.0"),
    "temperror-domain-OK": Case("a@ok.temperror.test", "temperror", "eom", 250),
}

CBV_TIMEOUT = 2


@pytest.fixture(scope="module")
def sink(nsd: Nsd) -> Iterator[SmtpSink]:
    with SmtpSink(SINK_IP, 25, name="mx.sink.test") as s:
        yield s


@pytest.fixture(autouse=True)
def sink_rules(sink: SmtpSink) -> Iterator[None]:
    sink.reset()
    sink.refuse("RCPT", "550 5.1.1 no such user here", rcpt="@cbv.softfail.test")
    sink.delay("RCPT", CBV_TIMEOUT * 4, rcpt="@slow.neutral.test")
    yield


def policy_sections(nsd: Nsd) -> dict[str, dict[str, str]]:
    """The daemon's configuration here (also used by test_cli_offline.py)."""
    return {
        "milter": {"internal_connect": "10.11.12.0/24", "internal_domains": "example.test",
                   "cbv_timeout": str(CBV_TIMEOUT)},
        "dns": {"nameservers": nsd.nameserver, "timeout": "1", "lifetime": "2"},
    }


@pytest.fixture(scope="module")
def bms(nsd: Nsd, sink: SmtpSink) -> Iterator[BmsDaemon]:
    with BmsDaemon(policy_sections(nsd), ACCESS) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def postfix(bms: BmsDaemon) -> Iterator[Postfix]:
    with Postfix(milters=bms.postfix_spec) as pf:
        yield pf


def message(mid: str, subject: str = "policy test") -> bytes:
    return (f"From: <sender@elsewhere.test>\r\nTo: <{RCPT}>\r\nSubject: {subject}\r\n"
            f"Message-ID: {mid}\r\n\r\nHello.\r\n").encode()


def flat(value: str | None) -> str:
    return re.sub(r"\s+", " ", value or "").strip()


@pytest.mark.parametrize("name", list(CASES))
def test_spf_result_meets_its_access_policy(name: str, mta: Mta, bms: BmsDaemon,
                                            sink: SmtpSink) -> None:
    case = CASES[name]
    # A sender per MTA: each run starts with an empty CBV cache for it.
    case = replace(case, sender=case.sender.replace("a@", f"{mta.name}@")
                   .replace("refused@", f"refused-{mta.name}@"))
    mid = new_message_id(f"spf-{name}-{mta.name}")
    client = mta.connect(CLIENT_IP)
    client.ehlo(CLIENT_PTR)
    t = client.transaction(case.sender, [RCPT], message(mid, f"test {name}"))
    reply = t.mail if case.stage == "mail" else t.data
    if case.stage != "mail":
        assert t.mail.code == 250, t
    assert reply is not None, t
    if case.code != 250:
        assert reply.code == case.code, (name, str(reply))
        assert case.text in reply.text, (name, str(reply))
    else:
        assert reply.code == 250, (name, str(reply))
        m = mta.stored(t, mid)
        spf = flat(m.get("Received-SPF"))
        assert spf.split()[0].lower() == case.result, spf
        assert f"receiver={RECEIVER}" in spf and f"client-ip={CLIENT_IP}" in spf, spf
        ar = flat(m.get("Authentication-Results"))
        assert ar.startswith(f"{RECEIVER};"), ar
        assert f"spf={case.result} smtp.mailfrom={case.sender}" in ar, ar
        assert f"iprev=pass policy.iprev={CLIENT_IP}" in ar, ar
    probes = [s for s in sink.sessions() if f"RCPT TO:<{case.sender}>" in s.commands]
    if case.sink == "probe":
        assert probes, sink.commands()
        assert "MAIL FROM:<>" in probes[0].commands
        assert probes[0].helo == RECEIVER  # the MTA's own name (macro j)
        assert not probes[0].messages
    elif case.sink == "dsn":
        [dsn] = [msg for s in probes for msg in s.messages]
        assert dsn.sender == ""
        assert dsn.recipients == (case.sender,)
        text = dsn.text
        assert "soft fail" in text and case.sender in text and CLIENT_IP in text, text
        assert f"test {name}" in text  # the subject of the message that caused it
    else:
        assert not probes, sink.commands()
    log = "\n".join(bms.connection_of(f"mail from <{case.sender}>"))
    assert f"connect from {CLIENT_PTR} at ({CLIENT_IP}," in log, log
    assert f"SPF {case.result}" in log or f"SPF: {case.result}" in log, log


def test_zombie_pc_is_refused_at_mail_from(mta: Mta, bms: BmsDaemon) -> None:
    client = mta.connect(INTERNAL_IP)
    client.ehlo("pc17.example.test")
    t = client.transaction(f"pc@zombie-{mta.name}.test", [RCPT], None)
    assert t.mail.code == 550, t
    assert "5.7.1" in t.mail.text
    bms.wait_log(f"REJECT: zombie PC at {INTERNAL_IP} sending MAIL FROM pc@zombie-{mta.name}.test")
    # The same internal host with one of our own domains is fine, and is not
    # held to SPF (no Received-SPF is added for internal mail).
    mid = new_message_id(f"internal-{mta.name}")
    t = client.transaction("user@example.test", [RCPT], message(mid))
    assert t.data is not None and t.data.code == 250, t
    assert mta.stored(t, mid).get("Received-SPF") is None
