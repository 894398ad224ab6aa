"""The ``bms`` admin subcommands (``bms ban …``, ``bms whitelist …``, …).

``bms`` without a subcommand is the daemon (``bms.py``); with one of
:data:`GROUPS` it runs that command against the configuration named by the
same ``-c`` files and the state store it configures, then exits.  A new
command group is one more :class:`Group` in :data:`GROUPS`: a name, a help
line and a function that adds its arguments, each action setting ``run``
(``args -> exit status``) with ``set_defaults``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from ..state.lists import BLACKLIST, WHITELIST
from . import access, bans, dmarc, greylist, lists, offline, stats
from .common import CommandError, Run, add_config_option


@dataclass(frozen=True)
class Group:
    """One subcommand group: ``bms NAME ACTION …``."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]


GROUPS: tuple[Group, ...] = (
    Group(bans.NAME, bans.HELP, bans.add_arguments),
    Group(WHITELIST, lists.HELP[WHITELIST], partial(lists.add_arguments, WHITELIST)),
    Group(BLACKLIST, lists.HELP[BLACKLIST], partial(lists.add_arguments, BLACKLIST)),
    Group(greylist.NAME, greylist.HELP, greylist.add_arguments),
    Group(access.NAME, access.HELP, access.add_arguments),
    Group(offline.NAME, offline.HELP, offline.add_arguments),
    Group(stats.NAME, stats.HELP, stats.add_arguments),
    Group(dmarc.NAME, dmarc.HELP, dmarc.add_arguments),
)


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names (after any ``-c PATH``), or None for the daemon."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-c", "--config"):
            i += 2
        elif arg.startswith("--config=") or (arg.startswith("-c") and len(arg) > 2):
            i += 1
        else:
            break
    names = {group.name for group in GROUPS}
    return argv[i] if i < len(argv) and argv[i] in names else None


def epilog() -> str:
    """The daemon's ``--help`` lines about the admin commands."""
    names = "|".join(group.name for group in GROUPS)
    return (f"Admin commands: bms [-c PATH] {{{names}}} ACTION ... "
            "(bms COMMAND --help for each).")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bms", description="Administer bms: its state store and configuration.")
    add_config_option(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        p = sub.add_parser(group.name, help=group.help, description=group.help)
        add_config_option(p)
        group.add_arguments(p)
    return parser


def main(argv: Sequence[str]) -> int:
    """Run the subcommand in ``argv``; its exit status (2, or the command's own
    ``cannot_run`` status, when it could not run: bad arguments, configuration
    or store)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        if exc.code == 2 and command_of(argv) == offline.NAME:
            return offline.CANNOT_RUN  # 2 means tempfail there
        raise
    run: Run = args.run
    try:
        return run(args)
    except BrokenPipeError:  # the output went into `head` or a pager that quit early
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the exit-time flush stays quiet
        return 1
    except CommandError as exc:
        print(f"bms {args.command}: {exc}", file=sys.stderr)
        return int(getattr(args, "cannot_run", 2))
