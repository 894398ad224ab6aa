"""``bms ban list|add|del``: the IP and domain bans of the state store
(SPEC §4 Reputation).  A ban added here is seen by every running daemon on
its next connection (they query the store, nothing is cached)."""

from __future__ import annotations

import argparse
import time

from ..log import escape
from ..policy.connection import parse_ip
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

NAME = "ban"
HELP = "list, add or delete banned client IPs and sender domains"


def target(text: str) -> tuple[str, str]:
    """``(kind, key)`` of a ban target: an IP address (``[...]``, ``IPv6:`` and
    any spelling accepted, stored as the daemon compares it), a domain, or ``*.suffix``."""
    value = text.strip()
    ip = parse_ip(value)  # as the daemon reads the client address: v4-mapped is IPv4
    if ip is not None:
        return "ip", str(ip)
    name = value.lower().rstrip(".")
    labels = name[2:] if name.startswith("*.") else name
    if not labels or any(not part or len(part) > 63 or not all(
            c.isalnum() or c in "-_" for c in part) for part in labels.split(".")):
        raise CommandError(f"not an IP address, domain or *.suffix: {escape(text)}")
    return "domain", name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add_json_option(add_action(sub, "list", "print the bans in force", run_list))
    p = add_action(sub, "add", "ban an IP address, a domain or every name below *.SUFFIX",
                   run_add)
    p.add_argument("target", metavar="IP|DOMAIN|*.SUFFIX",
                   help="a client IP address, a sender domain (that name only) or *.SUFFIX "
                        "(every name below SUFFIX)")
    p.add_argument("--days", type=positive_days,
                   help="how long the ban lasts (default: until deleted); an existing "
                        "ban that lasts longer is kept")
    p.add_argument("--reason", default="manual", help="why (shown by 'ban list')")
    p = add_action(sub, "del", "lift the ban of an IP address, domain or *.SUFFIX", run_del)
    p.add_argument("target", metavar="IP|DOMAIN|*.SUFFIX", help="the ban, as 'ban list' shows it")


def run_list(args: argparse.Namespace) -> int:
    with opened_store(config_of(args)) as store:
        bans = store.bans(time.time())
    rows = [(b.kind, b.key, when(b.until), b.reason) for b in bans]
    records = [{"kind": b.kind, "key": b.key, "until": json_time(b.until), "reason": b.reason}
               for b in bans]
    print_rows(("KIND", "BANNED", "UNTIL", "REASON"), rows, records, args.json)
    return 0


def run_add(args: argparse.Namespace) -> int:
    kind, key = target(args.target)
    until = expiry(args.days)
    with opened_store(config_of(args)) as store:
        if kind == "ip":
            store.ban_ip(key, until, args.reason)
        else:
            store.ban_domain(key, until, args.reason)
    print(f"banned {kind} {escape(key)} until {when(until)}")
    return 0


def run_del(args: argparse.Namespace) -> int:
    kind, key = target(args.target)
    with opened_store(config_of(args)) as store:
        found = store.unban(kind, key)
    if not found:
        print(f"{kind} {escape(key)} was not banned")
        return 1
    print(f"ban of {kind} {escape(key)} lifted")
    return 0
