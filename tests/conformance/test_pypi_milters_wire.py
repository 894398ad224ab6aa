"""Two milters from PyPI - dkimpy-milter 1.2.3 and spf-engine 3.1.0's
``pyspf-milter`` - each run twice with the same configuration, on real
pymilter (.venv-pymilter, libmilter) and on ``Milter`` (.venv, installed
there without dependencies), behind real Postfix and real sendmail, with
NSD serving their DKIM keys and SPF records (serve_pypi.py points their
resolver at it): the SMTP replies and the delivered messages must be the
same.

dkimpy-milter (``Mode sv``, signing for sign.test, 127.0.0.1 external):
a message the test signed with dkimpy for dkv.test (key in NSD) verifies
(``dkim=pass``); the same with its body changed after signing fails
(``dkim=fail``); mail From: sign.test is signed, from 127.0.0.1 and from
the internal host 10.11.12.13, and the delivered signature verifies with
dkimpy against the key in NSD; a signed message from the internal host is
not verified; Authentication-Results fields with its own authserv-id are
deleted (chgheader), another's kept.

pyspf-milter (client 127.0.0.1, which is neither skipped nor internal
here; the HELO check off): MAIL FROM domains with ``ip4:127.0.0.1 -all``
(pass), ``-all`` (fail: rejected at MAIL FROM), ``~all`` (softfail) and no
SPF record (none); the Authentication-Results field it adds is compared
(its milter writes no Received-SPF: it forces ``Header_Type`` AR).  From
the internal host nothing is checked.

Normalised, besides the fields the MTA writes itself and Date and
Message-ID (wirebed.MTA_HEADERS): the ``t=`` and ``b=`` tags of
DKIM-Signature fields (the time of signing and the signature over the
per-message Date and Message-ID) - the test's own signature and
dkimpy-milter's alike.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
import pytest
from dkimkeys import keypair
from testbed import make_message
from testbed.bms_host import dkim_dnsfunc, txt_rdata
from testbed.bmsd import REPO
from testbed.mail import StoredMessage
from testbed.milter import free_ports
from testbed.nsd import INTERNAL_IP, Nsd, add_local_addresses, nsd_with

from .conftest import conformance_dir
from .wirebed import Bed, milter_env, mta_bed, pymilter_python, serve, stop

pytestmark = pytest.mark.e2e

SERVE = str(Path(__file__).with_name("serve_pypi.py"))
AUTHSERV = "mx.conformance.test"
SELECTOR = "conf"
RCPT = "u@example.test"
HELO = "client.example.net"
INTERNAL = INTERNAL_IP  # 10.11.12.13, the only internal host: 127.0.0.1 is external

ZONE = [
    'spf-pass TXT "v=spf1 ip4:127.0.0.1 -all"',
    'spf-fail TXT "v=spf1 -all"',
    'spf-softfail TXT "v=spf1 ~all"',
    "spf-none A 192.0.2.1",  # exists, but has no SPF record
]

DKIM_CONF = """\
Syslog yes
SyslogSuccess yes
UserID root
Socket inet:{port}@127.0.0.1
Mode sv
Domain sign.test
Selector {selector}
KeyFile {keyfile}
InternalHosts {internal}
AuthservID {authserv}
MinimumKeyBits 1024
DNSTimeout 3
"""

SPF_CONF = """\
debugLevel = 1
TestOnly = 1
HELO_reject = No_Check
Mail_From_reject = Fail
skip_addresses = 192.0.2.250/32
InternalHosts = {internal}
Authserv_Id = {authserv}
Lookup_Time = 5
Socket = inet:{port}@127.0.0.1
PidFile = {pidfile}
UserID = root
"""


@dataclass(frozen=True)
class Case:
    name: str
    sender: str  # MAIL FROM and From:
    sign: str = ""  # DKIM-signed by the test for this domain
    body: str = "Hello from the conformance test.\n"
    altered: str = ""  # the body sent instead, after signing
    client: str = ""  # the local address the client connects from (default 127.0.0.1)
    headers: tuple[tuple[str, str], ...] = ()  # more header fields, after the standard ones


CASES: dict[str, list[Case]] = {
    "dkimpy-milter": [
        Case("verify-pass", "a@dkv.test", sign="dkv.test"),
        Case("verify-fail", "a@dkv.test", sign="dkv.test", altered="Hello, changed.\n"),
        Case("sign", "a@sign.test"),
        Case("sign-internal", "a@sign.test", client=INTERNAL),
        # Internal: signed, but not verified (no Authentication-Results).
        Case("internal-no-verify", "a@dkv.test", sign="dkv.test", client=INTERNAL),
        # Its own authserv-id's Authentication-Results fields are deleted
        # (chgheader by the index among the A-R fields), another's kept.
        Case("forged-ar", "a@dkv.test", sign="dkv.test", headers=(
            ("Authentication-Results", "other.example; spf=pass smtp.mailfrom=dkv.test"),
            ("Authentication-Results", f"{AUTHSERV}; dkim=pass header.d=forged.test"),
            ("Authentication-Results", f"{AUTHSERV}; spf=pass smtp.mailfrom=forged.test"),
        )),
    ],
    "pyspf-milter": [
        Case("spf-pass", "a@spf-pass.test"),
        Case("spf-fail", "a@spf-fail.test"),
        Case("spf-softfail", "a@spf-softfail.test"),
        Case("spf-none", "a@spf-none.test"),
        Case("spf-internal", "a@spf-fail.test", client=INTERNAL),  # not checked
    ],
}

SIG_TAG = re.compile(r"(^|;)(\s*)(t|b)=[^;]*")


def normalise_signature(value: str) -> str:
    """A DKIM-Signature value with its ``t=`` and ``b=`` values replaced."""
    return SIG_TAG.sub(lambda m: f"{m[1]}{m[2]}{m[3]}=*", value)


@dataclass
class Zone:
    nsd: Nsd
    keys: dict[str, tuple[Path, bytes]]  # domain -> (PEM file, PEM)


@pytest.fixture(scope="module")
def zone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zone]:
    """NSD with the SPF records and a DKIM key each for dkv.test and sign.test."""
    pymilter = pymilter_python()
    conformance_dir()
    for python in (sys.executable, pymilter):
        probe = subprocess.run([python, "-c", "import dkimpy_milter, spf_engine.milter_spf"],
                               capture_output=True, cwd="/", check=False)
        if probe.returncode != 0:
            pytest.skip(f"dkimpy-milter or spf-engine is not installed for {python} "
                        "(./test.sh installs them)")
    tmp = tmp_path_factory.mktemp("dkimkeys")
    keys, records = {}, list(ZONE)
    for domain in ("dkv.test", "sign.test"):
        pem, record = keypair(tmp, domain)
        keys[domain] = (tmp / f"{domain}.pem", pem)
        records.append(f"{SELECTOR}._domainkey.{domain.removesuffix('.test')} TXT "
                       + txt_rdata(record))
    add_local_addresses([INTERNAL])
    with nsd_with(records) as server:
        yield Zone(server, keys)


def _config(program: str, zone: Zone, port: int, d: Path) -> Path:
    if program == "dkimpy-milter":
        text = DKIM_CONF.format(port=port, selector=SELECTOR, keyfile=zone.keys["sign.test"][0],
                                internal=INTERNAL, authserv=AUTHSERV)
    else:
        text = SPF_CONF.format(port=port, internal=INTERNAL, authserv=AUTHSERV,
                               pidfile=d / "pyspf-milter.pid")
    path = d / f"{program}.conf"
    path.write_text(text)
    return path


@pytest.fixture(scope="module",
                params=[(p, k) for p in CASES for k in ("postfix", "sendmail")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def bed(request: pytest.FixtureRequest, zone: Zone,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Bed, dict[str, Path]]]:
    """(program, the bed, the milters' logs)."""
    program, kind = request.param
    pymilter = pymilter_python()
    ports = dict(zip(("pymilter", "ours"), free_ports(2), strict=True))
    procs, logs = [], {}
    try:
        for which, python in (("pymilter", pymilter), ("ours", sys.executable)):
            d = tmp_path_factory.mktemp(f"{program}-{kind}-{which}")
            conf = _config(program, zone, ports[which], d)
            logs[which] = d / "milter.log"
            procs.append(serve([python, SERVE, program, str(conf), str(zone.nsd.port)],
                               milter_env(d, which == "ours"), ports[which], logs[which],
                               f"{program} on {python}"))
        # Each runs on the framework it should.
        used = {w: log.read_text().splitlines()[0] for w, log in logs.items()}
        assert used["ours"] == f"Milter: {REPO / 'Milter' / '__init__.py'}", used
        assert used["pymilter"].endswith("/site-packages/Milter/__init__.py"), used
        with mta_bed(kind, ports) as b:
            yield program, b, logs
    finally:
        stop(procs)


def _message(case: Case, zone: Zone) -> tuple[str, bytes]:
    mid, msg = make_message(subject=case.name, body=case.body, sender=case.sender, to=RCPT,
                            headers=list(case.headers))
    if case.sign:
        sig = dkim.sign(msg, SELECTOR.encode(), case.sign.encode(), zone.keys[case.sign][1],
                        include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
        msg = sig + msg
    if case.altered:
        head, _, _ = msg.partition(b"\r\n\r\n")
        msg = head + b"\r\n\r\n" + case.altered.replace("\n", "\r\n").encode()
    return mid, msg


def _wire(m: StoredMessage) -> bytes:
    """The delivered message as it was signed: CRLF line ends."""
    head = "".join(f"{n}: {v}".replace("\n", "\r\n") + "\r\n" for n, v in m.headers)
    return head.encode() + b"\r\n" + m.body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _run(b: Bed, which: str, case: Case, zone: Zone) -> tuple[dict[str, Any], bytes | None]:
    mid, msg = _message(case, zone)
    result = b.send(which, HELO, case.sender, [RCPT], mid, msg, source=case.client)
    raw = None
    if "headers" in result:
        assert b.last is not None
        raw = _wire(b.last)
        result["headers"] = [(n, normalise_signature(v) if n.lower() == "dkim-signature" else v)
                             for n, v in result["headers"]]
    return result, raw


def _ar(outcome: dict[str, Any]) -> list[str]:
    return [v for n, v in outcome["headers"] if n.lower() == "authentication-results"]


def test_same_replies_and_delivered_messages(bed: tuple[str, Bed, dict[str, Path]],
                                             zone: Zone) -> None:
    program, b, logs = bed
    outcomes, raws = {}, {}
    for case in CASES[program]:
        reference, raws["pymilter", case.name] = _run(b, "pymilter", case, zone)
        ours, raws["ours", case.name] = _run(b, "ours", case, zone)
        assert ours == reference, case.name
        outcomes[case.name] = ours
    for which, log in logs.items():  # nothing went wrong unseen
        assert "Traceback" not in log.read_text(), (which, log.read_text()[-3000:])
    if program == "dkimpy-milter":
        for case in CASES[program]:
            assert outcomes[case.name]["data"] == 250, case.name
        [ar] = _ar(outcomes["verify-pass"])
        assert ar.startswith(AUTHSERV + ";") and "dkim=pass" in ar and "header.d=dkv.test" in ar
        [ar] = _ar(outcomes["verify-fail"])
        assert "dkim=fail" in ar
        assert _ar(outcomes["internal-no-verify"]) == []
        ars = _ar(outcomes["forged-ar"])
        assert "dkim=pass" in ars[0] and "header.d=dkv.test" in ars[0], ars
        assert ars[1].startswith("other.example;") and "header.d=forged.test" not in str(ars)
        # dkimpy-milter deletes the 2nd and then the 3rd A-R field.  sendmail
        # still counts a deleted field, Postfix does not: there the 3rd has
        # become the 2nd and stays (observed; the MTA's doing, on either framework).
        assert ("smtp.mailfrom=forged.test" in str(ars)) == (b.kind == "postfix"), ars
        ns = zone.nsd
        for name in ("sign", "sign-internal"):
            assert _ar(outcomes[name]) == []
            headers = outcomes[name]["headers"]
            assert headers[0][0] == "DKIM-Signature" and "d=sign.test" in headers[0][1]
            for which in logs:  # the signature each made verifies with the key in NSD
                raw = raws[which, name]
                assert raw is not None
                assert dkim.verify(raw, dnsfunc=dkim_dnsfunc(ns.host, ns.port)), (which, raw)
        return
    assert program == "pyspf-milter"
    fail = outcomes["spf-fail"]["mail"]
    assert fail is not None and fail[0] == 550 and "5.7.23" in fail[1], fail
    assert "data" not in outcomes["spf-fail"] or outcomes["spf-fail"]["data"] is None
    for name, result in (("spf-pass", "pass"), ("spf-softfail", "softfail"),
                         ("spf-none", "none")):
        assert outcomes[name]["data"] == 250, name
        [ar] = _ar(outcomes[name])
        assert ar.startswith(AUTHSERV + ";") and f"spf={result}" in ar, (name, ar)
        assert f"smtp.mailfrom={name}.test" in ar, ar
    assert outcomes["spf-internal"]["data"] == 250
    assert _ar(outcomes["spf-internal"]) == []
