"""What every ``bms`` admin subcommand shares: the ``-c`` files, the state
store they name, and how records are printed (text columns or ``--json``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from .. import privileges
from ..config import DEFAULT_PATH, Config, ConfigError, load_config
from ..interfaces import AdminStore
from ..log import escape
from ..policy.greylist import StoreUnavailable
from ..privileges import PrivilegeError
from ..runtime import RuntimeBuildError, open_store

Run = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """A one-line reason a command cannot run (exit status 2)."""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``-c PATH`` (repeatable), as the daemon takes it; also accepted after the subcommand."""
    parser.add_argument("-c", "--config", action="append", metavar="PATH",
                        default=argparse.SUPPRESS,
                        help=f"configuration file (default {DEFAULT_PATH}); repeat to layer "
                             "files, later ones override earlier ones")


def add_action(sub: Any, name: str, help: str, run: Run) -> argparse.ArgumentParser:
    """Action ``name`` of a subcommand group (``sub`` from ``add_subparsers``),
    taking ``-c`` too, that runs ``run``."""
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    add_config_option(parser)
    parser.set_defaults(run=run)
    return parser


def config_of(args: argparse.Namespace) -> Config:
    """The configuration of ``-c``; started as root, the process then runs as
    ``[milter] user`` (as the daemon does), so that a file the command
    creates (the SQLite state file, its -wal and -shm) stays the daemon's."""
    paths: Sequence[str] = getattr(args, "config", None) or [DEFAULT_PATH]
    try:
        config = load_config(paths)
        plan = privileges.plan(config.get("milter", "user"), config.get("milter", "group"),
                               euid=os.geteuid())
        if plan.target is not None:
            privileges.drop(plan.target)
    except (ConfigError, PrivilegeError) as exc:
        raise CommandError(str(exc)) from None
    return config


@contextmanager
def opened_store(config: Config) -> Iterator[AdminStore]:
    """The configured state store; a store that cannot be used is a CommandError."""
    try:
        store = open_store(config)
    except RuntimeBuildError as exc:
        raise CommandError(str(exc)) from None
    try:
        yield store
    except (StoreUnavailable, sqlite3.Error) as exc:
        raise CommandError(f"state store {store.path}: {exc}") from None
    finally:
        store.close()


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print one JSON array of objects instead of text columns")


def when(t: float) -> str:
    """An epoch time as ``YYYY-MM-DD HH:MM:SS UTC``; ``never`` for ``inf``."""
    if math.isinf(t):
        return "never"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def json_time(t: float) -> float | None:
    """An epoch time for JSON output (``null`` for never)."""
    return None if math.isinf(t) else t


def print_rows(heading: Sequence[str], rows: Sequence[Sequence[object]],
               records: Sequence[dict[str, Any]], as_json: bool) -> None:
    """``records`` as a JSON array, or ``rows`` as aligned, escaped text columns
    under ``heading`` (nothing but the heading when there are none)."""
    if as_json:
        json.dump(list(records), sys.stdout, indent=1, ensure_ascii=True)
        print()
        return
    table = [list(heading)] + [[escape(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(heading))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
              .rstrip())


def expiry(days: float | None) -> float:
    """``--days N`` as an epoch time from now; without it, never (``inf``)."""
    return math.inf if days is None else time.time() + days * 86400.0


def positive_days(text: str) -> float:
    """An ``argparse`` type: a positive number of days."""
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not days > 0 or math.isinf(days):
        raise argparse.ArgumentTypeError(f"days must be a positive number, got {text!r}")
    return days
