"""Where a quarantined message ends up, for the e2e tests of the milter
quarantine action: Postfix puts it in the hold queue; sendmail keeps it as
``hf<id>`` (not ``qf<id>``) with the reason in its ``q`` record."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .bms_mta import Mta
from .postfix import Postfix
from .sendmail import QueueFile, Sendmail
from .smtp import Transaction
from .waiting import wait_for


def postfix_held(pf: Postfix) -> list[str]:
    return [q for q in pf.queued() if q.startswith("hold/")]


def release_hold(pf: Postfix) -> None:
    """Delete what is on hold (later tests wait for an empty queue)."""
    postsuper = shutil.which("postsuper") or "/usr/sbin/postsuper"
    subprocess.run([postsuper, "-c", str(pf.etc), "-d", "ALL", "hold"], check=True,
                   capture_output=True)


def assert_quarantined(mta: Mta, request: pytest.FixtureRequest, t: Transaction,
                       reason: str) -> None:
    """The message of ``t`` is in quarantine (sendmail: with a reason
    starting with ``reason``); Postfix's hold queue is emptied afterwards."""
    if mta.name == "postfix":
        pf: Postfix = request.getfixturevalue("postfix")
        held = wait_for(lambda: postfix_held(pf), 20, "a message in the hold queue")
        assert len(held) == 1, held
        release_hold(pf)
        return
    sm: Sendmail = request.getfixturevalue("sendmail")
    assert t.queue_id, t
    assert not (sm.queue / f"qf{t.queue_id}").exists()
    qf = QueueFile.read(sm.queue / f"hf{t.queue_id}")
    reasons = [line[1:] for line in qf.lines if line.startswith("q")]
    assert reasons and reasons[0].startswith(reason), qf.lines
