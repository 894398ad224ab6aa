"""``bms greylist list|pass|flush``: the greylist triplets of the state
store (SPEC §4a), chosen by ``--sender``, ``--recipient`` and ``--client``.
``pass`` lets a waiting triplet's next attempt through; ``flush`` forgets
triplets (their next attempt is greylisted afresh)."""

from __future__ import annotations

import argparse
import time

from ..policy.greylist import GreylistSettings
from ..runtime_features import greylist_settings
from ..state.records import GreylistMatch
from .common import add_action, add_json_option, config_of, opened_store, print_rows, when

NAME = "greylist"
HELP = "list greylist triplets, let them pass, or flush them"


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sender", default="", metavar="ADDRESS|@DOMAIN",
                        help="only triplets of this envelope sender")
    parser.add_argument("--recipient", default="", metavar="ADDRESS|@DOMAIN",
                        help="only triplets of this recipient")
    parser.add_argument("--client", default="", metavar="IP|DOMAIN",
                        help="only triplets of this client IP (its /24 or /64) or SPF-pass "
                             "domain")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = add_action(sub, "list", "print the triplets (all, or those the filters choose)",
                   run_list)
    _add_filters(p)
    add_json_option(p)
    _add_filters(add_action(sub, "pass", "mark the chosen triplets passed: their next "
                                         "attempt is accepted", run_pass))
    _add_filters(add_action(sub, "flush", "forget the chosen triplets (every triplet "
                                          "without filters)", run_flush))


def _match(args: argparse.Namespace) -> GreylistMatch:
    return GreylistMatch(sender=args.sender, recipient=args.recipient, client=args.client)


def run_list(args: argparse.Namespace) -> int:
    with opened_store(config_of(args)) as store:
        entries = store.greylist_entries(_match(args))
    rows = [(e.origin, e.sender, e.recipient, when(e.firstseen), when(e.lastseen),
             "passed" if e.passed else "waiting", e.count) for e in entries]
    records = [{"origin": e.origin, "sender": e.sender, "recipient": e.recipient,
                "firstseen": e.firstseen, "lastseen": e.lastseen, "count": e.count,
                "passed": e.passed} for e in entries]
    print_rows(("ORIGIN", "SENDER", "RECIPIENT", "FIRST SEEN", "LAST SEEN", "STATE", "PASSES"),
               rows, records, args.json)
    return 0


def run_pass(args: argparse.Namespace) -> int:
    config = config_of(args)
    settings = greylist_settings(config) or GreylistSettings()
    with opened_store(config) as store:
        count = store.greylist_pass(_match(args), time.time(), settings)
    print(f"greylist: {count} triplet{'' if count == 1 else 's'} passed")
    return 0 if count else 1


def run_flush(args: argparse.Namespace) -> int:
    with opened_store(config_of(args)) as store:
        count = store.greylist_forget(_match(args))
    print(f"greylist: {count} triplet{'' if count == 1 else 's'} flushed")
    return 0
