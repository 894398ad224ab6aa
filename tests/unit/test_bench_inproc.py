"""bench/inproc.py, the developer's in-process loop, still runs the real
policy to the end: bms accepts the typical message (SPF, DMARC and, for the
signed one, DKIM pass) and adds its header fields."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("signed", [False, True])
def test_inproc_bench_runs_the_whole_policy(signed: bool, tmp_path: Path) -> None:
    args = [sys.executable, str(ROOT / "bench" / "inproc.py"), "--messages", "3",
            "--repeats", "1", "--threads", "2", "--workdir", str(tmp_path),
            *(["--signed"] if signed else [])]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    m = re.search(r"replies per message: (\w+)", done.stdout)
    assert m, done.stdout
    # O(ptneg), CONTINUE to each stage, header insertions, CONTINUE at the end.
    assert re.fullmatch(r"Oc+i+c", m[1]), m[1]
    assert re.search(r"CPU per message min \d+\.\d+ ms", done.stdout), done.stdout
    log = (tmp_path / "log" / "milter.log").read_text()
    assert "DMARC: pass policy=reject header.from=pass.test" in log, log[-2000:]
    assert ("DKIM: pass d=pass.test" in log) == signed
