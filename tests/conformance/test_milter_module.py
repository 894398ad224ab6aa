"""Our top-level ``milter`` module against real pymilter's C module: the
same public names, and the same value for every constant."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

import milter

LIST = ("import json, milter; print(json.dumps({n: getattr(milter, n) if isinstance("
        "getattr(milter, n), int) else None for n in dir(milter) if not n.startswith('_')}))")


def test_same_names_and_constants_as_pymilter() -> None:
    python = os.environ.get("BMS_PYMILTER_PYTHON")
    if not python or not os.path.exists(python):
        pytest.skip("pymilter is not built (./test.sh builds it in .venv-pymilter)")
    proc = subprocess.run([python, "-c", LIST], cwd="/", capture_output=True, text=True,
                          timeout=60, check=True)
    theirs = json.loads(proc.stdout)
    assert sorted(theirs) == sorted(milter.__all__)
    for name, value in theirs.items():
        if value is not None:
            assert getattr(milter, name) == value, name
