"""The test bed of the over-the-wire comparisons (test_sdist_milters_wire.py,
test_pypi_milters_wire.py): one milter program run twice - on real pymilter
(``$BMS_PYMILTER_PYTHON``, libmilter) and on ``Milter`` - each behind its own
listener of one real Postfix, or its own real sendmail daemon.

:func:`serve` starts a milter and waits until it listens, :func:`stop` ends
them; :func:`mta_bed` runs the MTA side and yields a :class:`Bed`, whose
:meth:`Bed.send` makes one SMTP transaction through the reference
("pymilter") or "ours" and returns what a comparison needs: the replies and
the delivered message (header fields in order, without the ones the MTA
writes itself or that differ per message by construction; body;
recipients).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from testbed import Postfix, Sendmail
from testbed.bmsd import REPO
from testbed.mail import StoredMessage
from testbed.postfix import listening
from testbed.pytest_plugin import require_netns
from testbed.smtp import SmtpClient
from testbed.waiting import wait_for

#: The two frameworks a milter runs on.
WHICH = ("pymilter", "ours")
#: Written by the MTA, or different per message by construction (make_message).
MTA_HEADERS = ("Received", "Return-Path", "Delivered-To", "X-Original-To", "Date", "Message-ID")


def pymilter_python() -> str:
    """The interpreter of .venv-pymilter (real pymilter); skips without it."""
    require_netns()
    pymilter = os.environ.get("BMS_PYMILTER_PYTHON")
    if not pymilter or not os.path.exists(pymilter):
        pytest.skip("pymilter is not built (./test.sh builds it in .venv-pymilter)")
    return pymilter


def milter_env(log_dir: Path, ours: bool, path: str = "") -> dict[str, str]:
    """The environment of a milter process: ``Milter`` from this repository
    first when ``ours``, then ``path`` (a ``PYTHONPATH`` tail)."""
    pythonpath = ":".join(p for p in ((str(REPO) if ours else ""), path) if p)
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": pythonpath, "HOME": str(log_dir),
            "TMPDIR": str(log_dir), "LANG": "C.UTF-8"}


def serve(argv: list[str], env: Mapping[str, str], port: int, log: Path,
          what: str) -> subprocess.Popen[bytes]:
    """Start ``argv`` (a milter listening on 127.0.0.1:``port``), its output
    in ``log``; wait until it listens (RuntimeError with its log if it exits)."""
    with log.open("wb") as err:
        proc = subprocess.Popen(argv, cwd=log.parent, stdout=err, stderr=err, env=dict(env))
    wait_for(lambda: listening("127.0.0.1", port) or proc.poll() is not None, timeout=20,
             what=f"{what} listening on port {port}")
    if proc.poll() is not None:
        raise RuntimeError(f"{what} failed: {log.read_text()[-2000:]}")
    return proc


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
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
        #: The message the last :meth:`send` delivered, if it was.
        self.last: StoredMessage | None = None

    def send(self, which: str, helo: str, sender: str, rcpts: list[str], mid: str,
             msg: bytes, source: str = "") -> dict[str, Any]:
        """One transaction through ``which``'s milter (from the local address
        ``source`` if given): the replies, and when the message was accepted
        its header fields (without MTA_HEADERS), its body as text and its
        recipients."""
        if self.postfix is not None:
            port = self.ports[which]
        else:
            assert self.sendmails is not None
            port = self.sendmails[which].port
        client = SmtpClient("127.0.0.1", port, source_address=(source, 0) if source else None)
        result: dict[str, Any] = {"helo": client.ehlo(helo)[0]}
        t = client.transaction(sender, rcpts, msg)
        client.close_politely()
        result["mail"] = (t.mail.code, t.mail.text) if t.mail else None
        result["rcpt"] = {r: (rep.code, rep.text) for r, rep in t.rcpt.items()}
        result["data"] = t.data.code if t.data else None
        self.last = None
        if t.data is not None and t.data.code == 250:
            if self.postfix is not None:
                m = self.postfix.message(mid)
            else:
                assert self.sendmails is not None and t.queue_id
                m = self.sendmails[which].queued(t.queue_id)
            self.last = m
            result["headers"] = [(n, v) for n, v in m.headers if n not in MTA_HEADERS]
            result["body"] = m.text
            result["recipients"] = sorted(m.recipients)
        return result


@contextmanager
def mta_bed(kind: str, ports: Mapping[str, int], main_cf: Mapping[str, str] | None = None,
            timeouts: str = "C:10s;S:20s;R:30s;E:60s") -> Iterator[Bed]:
    """Postfix with one listener per milter (``kind == "postfix"``), or one
    sendmail daemon per milter (``"sendmail"``, with ``timeouts`` as its
    milter's T=); ``ports`` maps "pymilter" and "ours" to the milters' ports."""
    if kind == "postfix":
        pf = Postfix(milters=f"inet:127.0.0.1:{ports['pymilter']}", main_cf=main_cf)
        listeners = {"pymilter": pf.port,
                     "ours": pf.add_listener(
                         smtpd_milters=f"inet:127.0.0.1:{ports['ours']}").port}
        with pf:
            yield Bed(kind, pf, None, listeners)
        return
    sms = {which: Sendmail(milter=f"inet:{port}@127.0.0.1", milter_timeouts=timeouts)
           for which, port in ports.items()}
    try:
        for sm in sms.values():
            sm.start_daemon()
        yield Bed(kind, None, sms, dict(ports))
    finally:
        for sm in sms.values():
            sm.cleanup()
