"""The same pymilter-API milter under real pymilter (libmilter) and under
``Milter``, behind one Postfix: what the SMTP client sees and what is
delivered must be the same.

pymilter is built by ./test.sh in .venv-pymilter (BMS_PYMILTER_PYTHON); both
milters run as separate processes through tests/milters/serve.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from testbed import Postfix, make_message
from testbed.milter import free_ports
from testbed.postfix import listening
from testbed.pytest_plugin import require_netns
from testbed.waiting import wait_for

pytestmark = pytest.mark.e2e

SERVE = str(Path(__file__).resolve().parents[1] / "milters" / "serve.py")


def _serve(python: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [python, SERVE, "compat_milter:CompatMilter", f"inet:{port}@127.0.0.1"],
            cwd="/", stdout=err, stderr=err)
    wait_for(lambda: listening("127.0.0.1", port) or proc.poll() is not None, timeout=20,
             what=f"{python} milter listening on port {port}")
    if proc.poll() is not None:
        raise RuntimeError(f"{python} milter failed: {log.read_text()[-2000:]}")
    return proc


@pytest.fixture(scope="module")
def bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Postfix, dict[str, int]]]:
    require_netns()
    pymilter = os.environ.get("BMS_PYMILTER_PYTHON")
    if not pymilter or not os.path.exists(pymilter):
        pytest.skip("pymilter is not built (./test.sh builds it in .venv-pymilter)")
    ports = free_ports(2)
    logs = tmp_path_factory.mktemp("parity")
    procs = {"pymilter": _serve(pymilter, ports[0], logs / "pymilter.log"),
             "ours": _serve(sys.executable, ports[1], logs / "ours.log")}
    try:
        domains = {"virtual_mailbox_domains": "example.test example.com"}
        pf = Postfix(milters=f"inet:127.0.0.1:{ports[0]}", main_cf=domains)
        listeners = {"pymilter": pf.port,
                     "ours": pf.add_listener(smtpd_milters=f"inet:127.0.0.1:{ports[1]}").port}
        with pf:
            yield pf, listeners
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _run(pf: Postfix, port: int, subject: str) -> tuple[dict[str, tuple[int, str]], dict[str, Any]]:
    mid, msg = make_message(subject=subject, body="please REPLACE me\n",
                            headers=[("X-Remove", "going away"), ("X-Keep", "stays")])
    client = pf.smtp(port=port)
    client.ehlo("parity.example.test")
    t = client.transaction("change@example.net",
                           ["keep@example.test", "drop@example.test", "reject@example.test"], msg)
    client.close_politely()
    replies = {r: (rep.code, rep.text) for r, rep in t.rcpt.items()}
    assert t.data is not None
    replies["DATA"] = (t.data.code, "")  # the text holds the queue id
    delivered: dict[str, Any] = {}
    if t.data.code == 250:
        m = pf.message(mid)
        drop = ("Received", "Return-Path", "Delivered-To", "X-Original-To", "Message-ID", "Date")
        delivered = {
            "headers": [(n, v) for n, v in m.headers if n not in drop],
            "body": m.text, "sender": m.sender, "recipients": sorted(m.recipients),
        }
    return replies, delivered


@pytest.mark.parametrize("subject", ["hello", "please reject this"])
def test_same_replies_and_same_delivered_message(bed: tuple[Postfix, dict[str, int]],
                                                  subject: str) -> None:
    pf, ports = bed
    reference = _run(pf, ports["pymilter"], subject)
    ours = _run(pf, ports["ours"], subject)
    assert ours == reference
    replies, delivered = ours
    assert replies["reject@example.test"][0] == 550
    if subject == "hello":
        assert delivered["body"] == "please REPLACED me\n"
        assert ("X-Compat", "checked") in delivered["headers"]
    else:
        assert replies["DATA"][0] == 550
