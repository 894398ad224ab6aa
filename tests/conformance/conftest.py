"""Fixtures of the conformance tier: the packages ./test.sh downloads into
``.cache/conformance`` (scripts/lib.sh ``ensure_conformance``) and pymilter's
sdist unpacked without its own ``Milter`` package and C module."""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

import pytest
from testbed.bmsd import REPO

PYMILTER = "pymilter-1.0.5"
#: 1.0.5's sdist lacks ``milter-template.py`` (which testsample imports as
#: ``template``); 1.0.4's has it.
TEMPLATE_FROM = "pymilter-1.0.4"
#: ``testgrey.py`` (pymilter's ``test.py`` runs it) is in 1.0's sdist and in
#: none of the later ones.
TESTGREY_FROM = "pymilter-1.0"


def conformance_dir() -> Path:
    path = Path(os.environ.get("BMS_CONFORMANCE") or REPO / ".cache" / "conformance")
    if not (path / f"{PYMILTER}.tar.gz").exists():
        pytest.skip(f"{path} lacks the downloads (./test.sh fetches them)")
    return path


def _extract(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest / archive.name.removesuffix(".tar.gz")


@pytest.fixture(scope="session")
def pymilter_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pymilter's sdist, unpacked, with ``Milter/`` and ``miltermodule.c``
    deleted, 1.0.4's ``milter-template.py`` copied in as ``template.py`` and
    1.0's ``testgrey.py``."""
    downloads = conformance_dir()
    top = tmp_path_factory.mktemp("pymilter-sdist")
    tree = _extract(downloads / f"{PYMILTER}.tar.gz", top)
    shutil.rmtree(tree / "Milter")
    (tree / "miltermodule.c").unlink()
    old = _extract(downloads / f"{TEMPLATE_FROM}.tar.gz", top / "old")
    shutil.copy2(old / "milter-template.py", tree / "template.py")
    grey = _extract(downloads / f"{TESTGREY_FROM}.tar.gz", top / "grey")
    shutil.copy2(grey / "testgrey.py", tree / "testgrey.py")
    return tree
