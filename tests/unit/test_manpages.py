"""bms(8) and pymilter.cfg(5) (bmslib/man/) are what bmslib.manpage writes
from the argparse definitions and the schema, byte for byte (run
scripts/manpages.py after changing an option); they name every option and
command, and man(1) formats them without a warning."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import bms
from bmslib import cli, manpage
from bmslib.config import SCHEMA

MAN = Path(manpage.__file__).parent / "man"


def pages() -> dict[str, str]:
    return manpage.pages(bms.build_parser(), cli.build_parser())


def test_committed_pages_are_what_the_generator_writes() -> None:
    for name, text in pages().items():
        assert (MAN / name).read_bytes() == text.encode(), (
            f"bmslib/man/{name} is stale: run .venv/bin/python scripts/manpages.py")


def test_pages_name_every_option_and_command() -> None:
    bms8 = (MAN / "bms.8").read_text()
    for action in bms.build_parser()._actions:
        for option in action.option_strings:
            assert manpage.roff(option) in bms8, option
    for group in cli.GROUPS:
        assert manpage.roff(f"bms {group.name}") in bms8, group.name
    cfg5 = (MAN / "pymilter.cfg.5").read_text()
    for section in SCHEMA.values():
        assert f".SH [{manpage.roff(section.name)}]" in cfg5, section.name
        for option in section.options:
            assert f"\\fB{manpage.roff(option)}" in cfg5, (section.name, option)


def test_roff_escapes_what_roff_would_read_as_markup() -> None:
    assert manpage.roff("a\\b --x") == "a\\eb \\-\\-x"
    assert manpage.roff(".SH not a macro\n'also") == "\\&.SH not a macro\n\\&'also"


@pytest.mark.skipif(shutil.which("man") is None, reason="man-db is not installed")
@pytest.mark.parametrize("name", list(manpage.PAGES))
def test_man_formats_the_pages_without_warnings(name: str) -> None:
    out = subprocess.run(["man", "--warnings", "-l", "-P", "cat", str(MAN / name)],
                         capture_output=True, text=True, timeout=60, check=False,
                         env={**os.environ, "MANWIDTH": "80"})
    assert out.returncode == 0 and out.stderr == "", out.stderr
    title = "BMS(8)" if name == "bms.8" else "PYMILTER.CFG(5)"
    assert out.stdout.lstrip().startswith(title), out.stdout[:200]
