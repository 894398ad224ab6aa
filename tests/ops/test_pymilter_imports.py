"""pymilter's users switch by installing this package instead: in a fresh
venv with only bms-milter installed (pip install, no pymilter anywhere) the
imports that dkimpy-milter, spf-engine and pymilter-style milters do work.

dkimpy-milter and spf-engine are installed (without dependencies) in the
test environment by ./test.sh (scripts/lib.sh ``ensure_conformance``); the
fresh venv sees them, and our dependencies, through its .pth line."""

from __future__ import annotations

import subprocess

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


def test_pymilter_imports_in_a_fresh_venv(installed: Installed) -> None:
    proc = subprocess.run([str(installed.python), "-c", PROBE], cwd="/", capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    milter_pkg, milter_mod, last = proc.stdout.splitlines()
    site = str(installed.venv)
    assert milter_pkg.startswith(site), milter_pkg  # the installed copy, not the checkout
    assert milter_mod.startswith(site), milter_mod
    assert last == "Milter.config ['a', 'b.example']"
