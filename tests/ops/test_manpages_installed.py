"""bms(8) and pymilter.cfg(5) after ``pip install`` into a fresh venv: in
``<venv>/share/man``, and shown by man(1) with ``-M`` or ``MANPATH``."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from .helpers import Installed

pytestmark = pytest.mark.skipif(shutil.which("man") is None, reason="man-db is not installed")


def man(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["man", "-P", "cat", *args], capture_output=True, text=True,
                          timeout=60, check=False, env={**os.environ, "MANWIDTH": "80", **env})


def test_pip_installs_the_man_pages(installed: Installed) -> None:
    share = installed.venv / "share" / "man"
    assert (share / "man8" / "bms.8").is_file(), list(share.rglob("*"))
    assert (share / "man5" / "pymilter.cfg.5").is_file()
    out = man(["-M", str(share), "bms"], {})
    assert out.returncode == 0, out.stderr
    assert out.stdout.lstrip().startswith("BMS(8)"), out.stdout[:300]
    text = " ".join(out.stdout.split())  # man justifies lines with extra spaces
    assert "bms ban add" in text and "bms test" in text, text
    out = man(["5", "pymilter.cfg"], {"MANPATH": str(share)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.lstrip().startswith("PYMILTER.CFG(5)"), out.stdout[:300]
    assert "log_format" in out.stdout and "syslog_socket" in out.stdout, out.stdout
