"""pymilter's example milters ``sample.py`` (1.0.5's sdist) and
``milter-template.py`` (1.0.4's, as ``template.py``), each run twice - on
real pymilter (.venv-pymilter, libmilter) and on ``Milter`` - behind real
Postfix and real sendmail: the SMTP replies and the delivered messages must
be the same.

template.py's ``body()`` writes bytes into a ``StringIO`` and raises on
Python 3.  It is ``@noreply``, so libmilter sends nothing and the MTA gives
up at its end-of-message timeout (milter_default_action / F=T: 451); Milter
answers the deferred failure at end of message (451 at once, README
"Running your pymilter milter on Milter").  The MTA timeouts are 5 s for
it, and only the reply codes are compared (the texts differ by design).

Normalised: the DATA reply text (it carries the queue id) and the headers
the MTA writes itself (Received, Return-Path, Delivered-To, X-Original-To),
Date and Message-ID, which differ per test message by construction, and the
name of the temporary file sample.py keeps a defanged original in (the
WARNING.TXT part quotes it).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testbed import Postfix, Sendmail, make_message
from testbed.bmsd import REPO
from testbed.milter import free_ports
from testbed.postfix import listening
from testbed.pytest_plugin import require_netns
from testbed.waiting import wait_for

import Milter

pytestmark = pytest.mark.e2e

SAVED_AS = re.compile(r"saved as '[^']*'")
SERVE = str(Path(__file__).with_name("serve_sdist.py"))
# Written by the MTA, or different per message by construction (make_message).
MTA_HEADERS = ("Received", "Return-Path", "Delivered-To", "X-Original-To", "Date", "Message-ID")

EXE_HEADERS = [("MIME-Version", "1.0"), ("Content-Type", 'multipart/mixed; boundary="b1"')]
EXE = """\
--b1
Content-Type: text/plain

see the attachment
--b1
Content-Type: application/octet-stream; name="setup.exe"
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="setup.exe"

TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA
--b1--
"""

#: (example, flags its main() sets, cases); a case is (name, HELO, sender,
#: recipients, subject, extra headers, body).
Case = tuple[str, str, str, list[str], str, list[tuple[str, str]], str]
EDITS = Milter.CHGBODY + Milter.CHGHDRS + Milter.ADDHDRS
CASES: dict[str, tuple[str, int, list[Case]]] = {
    "template": ("template:myMilter", EDITS + Milter.ADDRCPT + Milter.DELRCPT, [
        ("bad-helo", "nodot", "a@example.net", ["u@example.test"], "hi", [], ""),
        # No body chunk: eom() adds the Bcc and accepts.
        ("bcc", "client.example.net", "a@example.net", ["u@example.test"], "hi", [], ""),
        ("body-raises", "client.example.net", "a@example.net", ["u@example.test"], "hi", [],
         "text\n"),
    ]),
    "sample": ("sample:sampleMilter", EDITS, [
        ("plain", "client.example.net", "a@example.net", ["u@example.test"], "hello", [],
         "just text\n"),
        ("reject-subject", "client.example.net", "a@example.net", ["u@example.test"],
         "FREE money", [], "buy\n"),
        ("reject-mailer", "client.example.net", "a@example.net", ["u@example.test"], "hi",
         [("X-Mailer", "Calypso")], "bulk\n"),
        ("defang", "client.example.net", "a@example.net", ["u@example.test"], "files",
         EXE_HEADERS, EXE),
    ]),
}


def _serve(python: str, target: str, flags: int, port: int, tree: Path, log: Path,
           ours: bool) -> subprocess.Popen[bytes]:
    path = f"{REPO}:{tree}" if ours else str(tree)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": path, "HOME": str(log.parent),
           "TMPDIR": str(log.parent), "LANG": "C.UTF-8"}
    with log.open("wb") as err:
        proc = subprocess.Popen([python, SERVE, target, str(flags), f"inet:{port}@127.0.0.1"],
                                cwd=log.parent, stdout=err, stderr=err, env=env)
    wait_for(lambda: listening("127.0.0.1", port) or proc.poll() is not None, timeout=20,
             what=f"{target} on {python} listening on port {port}")
    if proc.poll() is not None:
        raise RuntimeError(f"{target} on {python} failed: {log.read_text()[-2000:]}")
    return proc


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Bed:
    """One MTA kind with two listeners: pymilter's milter and ours."""

    def __init__(self, kind: str, postfix: Postfix | None,
                 sendmails: dict[str, Sendmail] | None, ports: dict[str, int]) -> None:
        self.kind, self.postfix, self.sendmails, self.ports = kind, postfix, sendmails, ports

    def run(self, which: str, case: Case) -> dict[str, Any]:
        _name, helo, sender, rcpts, subject, headers, body = case
        mid, msg = make_message(subject=subject, body=body, headers=headers)
        if self.postfix is not None:
            client = self.postfix.smtp(port=self.ports[which])
        else:
            assert self.sendmails is not None
            client = self.sendmails[which].smtp()
        result: dict[str, Any] = {"helo": client.ehlo(helo)[0]}
        t = client.transaction(sender, rcpts, msg)
        client.close_politely()
        result["mail"] = (t.mail.code, t.mail.text) if t.mail else None
        result["rcpt"] = {r: (rep.code, rep.text) for r, rep in t.rcpt.items()}
        result["data"] = t.data.code if t.data else None
        if t.data is not None and t.data.code == 250:
            if self.postfix is not None:
                m = self.postfix.message(mid)
            else:
                assert self.sendmails is not None and t.queue_id
                m = self.sendmails[which].queued(t.queue_id)
            result["headers"] = [(n, v) for n, v in m.headers if n not in MTA_HEADERS]
            # sample.py names the temporary file that keeps the original.
            result["body"] = SAVED_AS.sub("saved as 'TEMPFILE'", m.text)
            result["recipients"] = sorted(m.recipients)
        return result


@pytest.fixture(scope="module", params=[(e, k) for e in CASES for k in ("postfix", "sendmail")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def bed(request: pytest.FixtureRequest, pymilter_tree: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Bed]]:
    require_netns()
    pymilter = os.environ.get("BMS_PYMILTER_PYTHON")
    if not pymilter or not os.path.exists(pymilter):
        pytest.skip("pymilter is not built (./test.sh builds it in .venv-pymilter)")
    example, kind = request.param
    target, flags, _ = CASES[example]
    ports = dict(zip(("pymilter", "ours"), free_ports(2), strict=True))
    procs = []
    try:
        for which, python in (("pymilter", pymilter), ("ours", sys.executable)):
            log = tmp_path_factory.mktemp(f"{example}-{which}") / "milter.log"
            procs.append(_serve(python, target, flags, ports[which], pymilter_tree, log,
                                which == "ours"))
        main_cf = {"virtual_mailbox_domains": "example.test example.com"}
        timeouts = "C:10s;S:20s;R:30s;E:60s"
        if example == "template":  # its stalls end at the MTA's timeout
            main_cf["milter_content_timeout"] = "5s"
            timeouts = "C:10s;S:20s;R:5s;E:5s"
        if kind == "postfix":
            pf = Postfix(milters=f"inet:127.0.0.1:{ports['pymilter']}", main_cf=main_cf)
            listeners = {"pymilter": pf.port,
                         "ours": pf.add_listener(
                             smtpd_milters=f"inet:127.0.0.1:{ports['ours']}").port}
            with pf:
                yield example, Bed(kind, pf, None, listeners)
        else:
            sms = {which: Sendmail(milter=f"inet:{port}@127.0.0.1", milter_timeouts=timeouts)
                   for which, port in ports.items()}
            try:
                for sm in sms.values():
                    sm.start_daemon()
                yield example, Bed(kind, None, sms, ports)
            finally:
                for sm in sms.values():
                    sm.cleanup()
    finally:
        _stop(procs)


def test_same_replies_and_delivered_messages(bed: tuple[str, Bed]) -> None:
    example, b = bed
    outcomes = {}
    for case in CASES[example][2]:
        reference = b.run("pymilter", case)
        ours = b.run("ours", case)
        assert ours == reference, case[0]
        outcomes[case[0]] = ours
    if example == "template":
        assert outcomes["bad-helo"]["data"] != 250
        assert outcomes["bcc"]["recipients"] == ["spy@example.com", "u@example.test"]
        assert outcomes["body-raises"]["data"] == 451
        return
    assert example == "sample"
    assert outcomes["plain"]["body"] == "just text\n"
    assert outcomes["reject-subject"]["data"] in (550, 554)  # Postfix, sendmail
    assert outcomes["reject-mailer"]["data"] in (550, 554)
    assert "setup.exe" in outcomes["defang"]["body"]
    assert "TVqQAAMAAAAEAAAA" not in outcomes["defang"]["body"]  # the attachment is gone
