"""miltertest (OpenDKIM's scripted MTA) against the framework: negotiation
with protocol versions 2, 4 and 6, and a full session with every edit.

Each Lua script gets the milter's socket with ``-D socket=...`` and fails
(exit status 1, after a "FAIL ..." line) on the first wrong reply."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from testbed.milter import RunningMilter

pytestmark = pytest.mark.e2e

SCRIPTS = Path(__file__).resolve().parent.parent / "miltertest"
MILTERTEST = shutil.which("miltertest")


def run_script(script: str, milter: RunningMilter, **defines: str) -> str:
    if MILTERTEST is None:
        pytest.skip("miltertest is not installed: run ./test.sh")
    args = [MILTERTEST, "-D", f"socket={milter.libmilter_spec}",
            "-D", f"scriptdir={SCRIPTS}/"]
    for name, value in defines.items():
        args += ["-D", f"{name}={value}"]
    args += ["-s", str(SCRIPTS / script)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{script} {defines} failed ({proc.returncode}):\n{output}"
    return output


@pytest.mark.parametrize("version", [2, 4, 6])
@pytest.mark.parametrize("kind", ["inet", "unix"])
def test_negotiate(feature_milters: dict[str, RunningMilter], kind: str, version: int) -> None:
    out = run_script("negotiate.lua", feature_milters[kind], version=str(version))
    assert f"OK negotiate version {version}" in out


@pytest.mark.parametrize("kind", ["inet", "unix"])
def test_full_transaction(feature_milters: dict[str, RunningMilter], kind: str) -> None:
    out = run_script("transaction.lua", feature_milters[kind])
    assert "OK transaction" in out
