"""Started as root with ``[milter] user = mail`` on an interpreter that mail
cannot read (this test's own, when it lives under /root): bms loads what it
needs before the switch, serves, and says so in one warning line."""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
from mtaclient import MtaClient

from Milter.protocol import commands as cmd
from Milter.protocol import replies as R

from .helpers import Daemon, runs_as, write_config


@pytest.mark.skipif(os.geteuid() != 0, reason="starts as root and switches to mail")
def test_unreadable_interpreter_is_one_warning_line(open_tmp: Path) -> None:
    python = Path(sys.executable)
    if runs_as("mail", python, "import bms"):
        pytest.skip(f"user mail can read {python}: nothing unreadable here")
    cfg = write_config(open_tmp, {"milter": {"user": "mail", "internal_connect": "192.0.2.0/24"}})
    for sub in ("run", "log", "lib", "save"):
        (open_tmp / sub).mkdir()
        shutil.chown(open_tmp / sub, "mail")
    d = Daemon(open_tmp, cfg)
    try:
        d.wait_ready()
        with MtaClient(str(open_tmp / "run" / "bms.sock"), family=socket.AF_UNIX) as mta:
            mta.negotiate()
            assert mta.connect(ip="192.0.2.10") == R.CONTINUE
            assert mta.command(cmd.Helo(b"pc.example.net")) == R.CONTINUE
            assert mta.command(cmd.Mail((b"<alice@example.net>",))) == R.CONTINUE
            assert mta.command(cmd.Rcpt((b"<bob@example.org>",))) == R.CONTINUE
            reply = mta.command(cmd.Data())
            assert reply == R.CONTINUE, reply
        stderr = d.stderr.read_text()
        assert "Traceback" not in stderr
        lines = [line for line in stderr.splitlines() if "cannot read" in line]
        assert len(lines) == 1, stderr
        assert lines[0].startswith("bms: warning: user mail cannot read ")
        assert lines[0].endswith("install bms where that user can read (README: a venv in "
                                 "/opt/bms)")
    finally:
        assert d.stop() == 0
    assert "Traceback" not in d.stderr.read_text()
