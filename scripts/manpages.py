"""Write the manual pages bms(8) and pymilter.cfg(5) into bmslib/man/ from
the argparse definitions and the configuration schema (bmslib.manpage).
Run after changing an option: .venv/bin/python scripts/manpages.py"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bms  # noqa: E402 - after the path is set
from bmslib import cli, manpage  # noqa: E402

for name, text in manpage.pages(bms.build_parser(), cli.build_parser()).items():
    (ROOT / "bmslib" / "man" / name).write_text(text)
    print(f"wrote bmslib/man/{name}")
