"""Fixtures of the operations tier: bms installed by pip into a fresh venv,
and temporary directories other users (the daemon's user, mail) can reach."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from testbed.bmsd import REPO

from .helpers import Installed, runs_as, world_tmp

# What the daemon imports besides the standard library (pyproject dependencies).
DEPENDENCIES = "import spf, dns.resolver, authres, SRS, dkim, redis"
DROP_USER = "mail"


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    path = world_tmp("bms-ops-")
    yield path
    if not os.environ.get("BMS_KEEP_TMP"):
        shutil.rmtree(path, ignore_errors=True)


def _base_interpreters() -> list[str]:
    """Interpreters of this Python version that can host a venv: the one
    behind our venv first, then the system's."""
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    found: list[str] = []
    for cand in (getattr(sys, "_base_executable", sys.executable), "/usr/bin/python3",
                 shutil.which("python3") or ""):
        real = os.path.realpath(cand) if cand else ""
        if not real or real in found or not os.access(real, os.X_OK):
            continue
        version = subprocess.run([real, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, check=False)
        if version.stdout.strip() == want:
            found.append(real)
    return found


def debian_packages(base: str) -> bool:
    """Whether ``base`` is Debian's own Python with the dependencies from
    Debian packages (python3-redis, ... : ./test.sh's setup installs them)."""
    if not base.startswith("/usr/bin/"):
        return False
    return all(subprocess.run([base, "-c", code], capture_output=True, cwd="/",
                              check=False).returncode == 0
               for code in (f"{DEPENDENCIES}, prometheus_client", "import setuptools, wheel",
                            "import pip"))


def _make_venv(base: str, venv: Path) -> Path:
    """A venv without pip whose only extra path is our environment's
    site-packages: the dependencies (and pip, setuptools, wheel) without the
    network; on Debian's own Python with the Debian packages, a venv with the
    system site-packages instead (bms then runs on Debian 12's versions).
    bms itself is not visible there until pip installs it."""
    shutil.rmtree(venv, ignore_errors=True)
    if debian_packages(base):
        subprocess.run([base, "-m", "venv", "--without-pip", "--system-site-packages",
                        str(venv)], check=True)
        python = venv / "bin" / "python"
        # publicsuffixlist has no Debian 12 package: from PyPI, as README's recipe.
        pypi_only = venv / "pypi-only"
        pypi_only.mkdir()
        import publicsuffixlist
        source = Path(publicsuffixlist.__file__).parent
        shutil.copytree(source, pypi_only / source.name)
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                               "get_paths()['purelib'])"], capture_output=True, text=True,
                              check=True)
        Path(site.stdout.strip()).mkdir(parents=True, exist_ok=True)
        Path(site.stdout.strip(), "bms-pypi-only.pth").write_text(f"{pypi_only}\n")
        return python
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True)
    ours = sysconfig.get_paths()["purelib"]
    Path(site.stdout.strip(), "bms-test-deps.pth").write_text(ours + "\n")
    return python


def _copy_source(dest: Path) -> None:
    """What ``pip install .`` needs, without the repository's build state."""
    dest.mkdir()
    for name in ("pyproject.toml", "setup.py", "setup.cfg", "README.md", "MANIFEST.in"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)
    for module in REPO.glob("*.py"):
        shutil.copy2(module, dest / module.name)
    for package in ("Milter", "bmslib"):
        shutil.copytree(REPO / package, dest / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


@pytest.fixture(scope="session")
def installed() -> Iterator[Installed]:
    top = world_tmp("bms-install-")
    try:
        bases = _base_interpreters()
        assert bases, "no interpreter of this Python version to build a venv with"
        venv = top / "venv"
        chosen, python, drop_user = bases[0], _make_venv(bases[0], venv), None
        if os.geteuid() == 0:
            for base in bases:
                python = _make_venv(base, venv)
                if runs_as(DROP_USER, python, DEPENDENCIES):
                    chosen, drop_user = base, DROP_USER
                    break
            else:
                python = _make_venv(chosen, venv)
        _copy_source(top / "src")
        pip = subprocess.run(
            [str(python), "-m", "pip", "install", "--no-index", "--no-deps",
             "--no-build-isolation", "--no-cache-dir", "--disable-pip-version-check",
             str(top / "src")], capture_output=True, text=True, timeout=300, check=False,
            cwd=str(top))
        output = pip.stdout + pip.stderr
        assert pip.returncode == 0, f"pip install failed:\n{output}"
        yield Installed(venv, python, venv / "bin" / "bms", drop_user, output)
    finally:
        if not os.environ.get("BMS_KEEP_TMP"):
            shutil.rmtree(top, ignore_errors=True)
