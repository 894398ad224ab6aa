"""The original bms's own sample config (``milter.cfg`` of the milter 0.8.18
sdist on PyPI, downloaded by ./test.sh's setup) passes ``--check-config``
with warnings only, once the directories it names exist."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .helpers import run_bms

DIRS = ("/var/lib/milter", "/var/log/milter/save", "/var/run/milter")


def original_cfg() -> Path:
    name = os.environ.get("BMS_ORIGINAL_CFG")
    if not name:
        pytest.skip("needs ./test.sh (it downloads the milter 0.8.18 sdist)")
    path = Path(name)
    assert path.is_file(), f"{path}: missing; ./test.sh's setup downloads it"
    return path


def test_original_sample_config_passes_check_config(tmp_path: Path) -> None:
    text = original_cfg().read_bytes().decode("latin-1")
    for directory in DIRS:  # the same tree, under a private root
        assert directory in text
        (tmp_path / directory.lstrip("/")).mkdir(parents=True)
    cfg = tmp_path / "milter.cfg"
    cfg.write_bytes(text.replace("/var/", f"{tmp_path}/var/").encode("latin-1"))
    done = run_bms("-c", str(cfg), "--check-config")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"bms: configuration OK ({cfg})"
    warnings = done.stderr.splitlines()
    assert all(line.startswith("bms: warning: ") for line in warnings), warnings
    assert any("[dkim] privkey without [dkim] domain: not signing" in w for w in warnings)
    assert sum("no access file, the built-in SPF defaults apply" in w
               for w in warnings) == (0 if os.path.exists("/etc/mail/access") else 1)
