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

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testbed import make_message
from testbed.milter import free_ports

import Milter

from .wirebed import Bed, milter_env, mta_bed, pymilter_python, serve, stop

pytestmark = pytest.mark.e2e

SAVED_AS = re.compile(r"saved as '[^']*'")
SERVE = str(Path(__file__).with_name("serve_sdist.py"))

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
    return serve([python, SERVE, target, str(flags), f"inet:{port}@127.0.0.1"],
                 milter_env(log.parent, ours, str(tree)), port, log, f"{target} on {python}")


def _run(bed: Bed, which: str, case: Case) -> dict[str, Any]:
    _name, helo, sender, rcpts, subject, headers, body = case
    mid, msg = make_message(subject=subject, body=body, headers=headers)
    result = bed.send(which, helo, sender, rcpts, mid, msg)
    if "body" in result:  # sample.py names the temporary file that keeps the original.
        result["body"] = SAVED_AS.sub("saved as 'TEMPFILE'", result["body"])
    return result


@pytest.fixture(scope="module", params=[(e, k) for e in CASES for k in ("postfix", "sendmail")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def bed(request: pytest.FixtureRequest, pymilter_tree: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Bed]]:
    pymilter = pymilter_python()
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
        with mta_bed(kind, ports, main_cf, timeouts) as b:
            yield example, b
    finally:
        stop(procs)


def test_same_replies_and_delivered_messages(bed: tuple[str, Bed]) -> None:
    example, b = bed
    outcomes = {}
    for case in CASES[example][2]:
        reference = _run(b, "pymilter", case)
        ours = _run(b, "ours", case)
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
