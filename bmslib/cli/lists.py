"""``bms whitelist|blacklist list|add|del``: the auto-whitelist and the
blacklist of the state store (:mod:`bmslib.state.lists`).  An entry is a full
address or ``@domain`` (every address of the domain); running daemons see a
change on their next message."""

from __future__ import annotations

import argparse
import time
from functools import partial

from ..log import escape
from ..state.lists import BLACKLIST, WHITELIST, entry_key
from .common import (
    CommandError,
    add_action,
    add_json_option,
    config_of,
    expiry,
    json_time,
    opened_store,
    positive_days,
    print_rows,
    when,
)

HELP = {
    WHITELIST: "list, add or delete auto-whitelist entries (no greylisting for these senders)",
    BLACKLIST: "list, add or delete blacklist entries (mail from these senders is refused)",
}


def entry(text: str) -> str:
    """An entry as stored: ``user@domain`` or a bare domain (``@domain`` accepted)."""
    key = entry_key(text)
    key = key[1:] if key.startswith("@") else key
    if not key or any(c.isspace() or c in "<>" for c in key):
        raise CommandError(f"not an address or @domain: {escape(text)}")
    return key


def add_arguments(kind: str, parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_json_option(add_action(sub, "list", f"print the {kind} entries in force",
                               partial(run_list, kind)))
    p = add_action(sub, "add", f"add an address or @domain to the {kind}",
                   partial(run_add, kind))
    p.add_argument("entry", metavar="ADDRESS|@DOMAIN",
                   help="a sender address, or @domain for every address of the domain")
    p.add_argument("--days", type=positive_days,
                   help="how long the entry lasts (default: until deleted)")
    p = add_action(sub, "del", f"delete an address or @domain from the {kind}",
                   partial(run_del, kind))
    p.add_argument("entry", metavar="ADDRESS|@DOMAIN", help="the entry, as 'list' shows it")


def _shown(key: str) -> str:
    return key if "@" in key else f"@{key}"


def run_list(kind: str, args: argparse.Namespace) -> int:
    with opened_store(config_of(args)) as store:
        entries = store.list_entries(kind, time.time())
    print_rows(("ENTRY", "UNTIL"), [(_shown(e.entry), when(e.until)) for e in entries],
               [{"entry": _shown(e.entry), "until": json_time(e.until)} for e in entries],
               args.json)
    return 0


def run_add(kind: str, args: argparse.Namespace) -> int:
    key, until = entry(args.entry), expiry(args.days)
    with opened_store(config_of(args)) as store:
        store.list_add(kind, key, until)
    print(f"{kind}: added {escape(_shown(key))} until {when(until)}")
    return 0


def run_del(kind: str, args: argparse.Namespace) -> int:
    key = entry(args.entry)
    with opened_store(config_of(args)) as store:
        found = any(e.entry == key for e in store.list_entries(kind, time.time()))
        store.list_remove(kind, key)
    if not found:
        print(f"{kind}: {escape(_shown(key))} was not listed")
        return 1
    print(f"{kind}: deleted {escape(_shown(key))}")
    return 0
