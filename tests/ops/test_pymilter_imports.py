"""pymilter's users switch by installing this package instead: in a fresh
venv with only bms-milter installed (pip install, no pymilter anywhere) the
imports that dkimpy-milter, spf-engine and pymilter-style milters do work.

dkimpy-milter and spf-engine are installed (without dependencies) in the
test environment by ./test.sh (scripts/lib.sh ``ensure_conformance``); the
fresh venv sees them, and our dependencies, through its .pth line."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

from .helpers import Installed

PROBE = """\
import importlib.metadata
try:
    importlib.metadata.distribution("pymilter")
    raise SystemExit("pymilter is installed")
except importlib.metadata.PackageNotFoundError:
    pass
import dkimpy_milter, spf_engine.milter_spf, milter, Milter
from Milter.config import MilterConfigParser
from Milter.utils import parse_addr, parseaddr
import Milter.dynip, Milter.cache, Milter.greysql, Milter.dsn, Milter.sgmllib
print(Milter.__file__)
print(milter.__file__)
print(MilterConfigParser.__module__, parse_addr("<a@b.example>"))
"""


def _their_milters(directory: Path) -> str:
    """A directory holding only dkimpy-milter's and spf-engine's packages (from
    the test environment): the programs an admin has, next to the fresh venv,
    which may be on Debian's own Python (tests/ops/conftest.py)."""
    for name in ("dkimpy_milter", "spf_engine"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin, f"{name} is not installed (./test.sh does it)"
        (directory / name).symlink_to(Path(spec.origin).parent)
    return str(directory)


def test_pymilter_imports_in_a_fresh_venv(installed: Installed, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": _their_milters(tmp_path)}
    proc = subprocess.run([str(installed.python), "-c", PROBE], cwd="/", capture_output=True,
                          text=True, timeout=120, check=False, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    milter_pkg, milter_mod, last = proc.stdout.splitlines()
    site = str(installed.venv)
    assert milter_pkg.startswith(site), milter_pkg  # the installed copy, not the checkout
    assert milter_mod.startswith(site), milter_mod
    assert last == "Milter.config ['a', 'b.example']"
