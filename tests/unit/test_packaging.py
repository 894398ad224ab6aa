"""Packaging that an admin on Debian 12 meets: dependency ranges that admit
Debian's own packages, no deprecated metadata forms, ./run.sh without the
test tools."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = (ROOT / "pyproject.toml").read_text()  # (tomllib is Python >= 3.11 only)
PROJECT = PYPROJECT.split("[project]", 1)[1].split("\n[", 1)[0]

# Debian 12 (bookworm) versions of python3-spf, -dnspython, -authres, -srs,
# -dkim, -redis, -prometheus-client.
DEBIAN_12 = {"pyspf": "2.0.14", "dnspython": "2.3.0", "authres": "1.2.0", "pysrs": "1.0.4",
             "dkimpy": "1.1.4", "redis": "4.3.4", "prometheus-client": "0.16.0"}
# Not packaged in Debian 12 (python3-publicsuffix2 is a 2019 list): the README's
# Debian recipe installs it from PyPI; tests/ops puts it next to Debian's packages.
PYPI_ONLY = {"publicsuffixlist"}


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_dependency_ranges_admit_debian_12() -> None:
    found = {}
    block = PROJECT.split("dependencies = [", 1)[1].split("]", 1)[0]
    for spec in re.findall(r'"([^"]+)"', block):
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", spec)
        assert m, f"{spec!r}: only lower bounds, so that Debian's versions stay admitted"
        found[m[1]] = m[2]
    assert set(found) == set(DEBIAN_12) | PYPI_ONLY
    for name, minimum in found.items():
        if name in PYPI_ONLY:
            continue
        assert version(minimum) <= version(DEBIAN_12[name]), (name, minimum)


def test_no_deprecated_license_metadata() -> None:
    # The table form is deprecated, the SPDX string too new for Debian's setuptools.
    assert not re.search(r"^license\s*=", PROJECT, re.MULTILINE)
    assert "License ::" not in PROJECT


def test_run_sh_installs_the_runtime_dependencies_only() -> None:
    text = (ROOT / "run.sh").read_text()
    assert 'ensure_venv "$ROOT/.venv-run" "."' in text
    assert "[test]" not in text
