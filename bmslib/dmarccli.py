"""``bms dmarc report``: write RFC 7489 aggregate-report XML, one file per
policy domain, from the counts in the state store for a period of whole UTC
days (default: yesterday).

    bms dmarc report [-c CONFIG]... [--from YYYY-MM-DD] [--to YYYY-MM-DD]
                     [--domain DOMAIN]... [-o DIRECTORY]

Files are named ``<receiver>!<policy domain>!<begin>!<end>.xml`` (RFC 7489
§7.2.1.1); the report's org_name and email come from ``[dmarc] report_org``
and ``report_email``.  Reports are only written, never sent.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from collections.abc import Sequence

from .config import DEFAULT_PATH, ConfigError, load_config
from .policy.dmarcreport import DAY, merge, report_xml
from .policy.greylist import StoreUnavailable
from .runtime import RuntimeBuildError, open_store


def _day(text: str) -> int:
    try:
        d = datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None
    return (d - datetime.date(1970, 1, 1)).days


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bms dmarc report",
                                description="write DMARC aggregate reports (XML)")
    p.add_argument("-c", "--config", action="append", metavar="PATH",
                   help=f"configuration file (default {DEFAULT_PATH}); repeatable")
    p.add_argument("--from", dest="first", type=_day, metavar="YYYY-MM-DD",
                   help="first UTC day of the period (default: yesterday)")
    p.add_argument("--to", dest="last", type=_day, metavar="YYYY-MM-DD",
                   help="last UTC day of the period (default: the first day)")
    p.add_argument("--domain", action="append", default=[],
                   help="only this policy domain (repeatable)")
    p.add_argument("-o", "--output", default=".", metavar="DIRECTORY",
                   help="where the XML files go (default: the current directory)")
    return p.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    """``argv`` after ``bms dmarc``: ``report [options]``."""
    if not argv or argv[0] != "report":
        print("bms: usage: bms dmarc report [-c CONFIG] [--from DAY] [--to DAY] "
              "[--domain D] [-o DIR]", file=sys.stderr)
        return 2
    args = parse_args(argv[1:])
    try:
        config = load_config(args.config or [DEFAULT_PATH])
        store = open_store(config)
    except (ConfigError, RuntimeBuildError) as exc:
        print(f"bms: {exc}", file=sys.stderr)
        return 2
    first = args.first if args.first is not None else int(time.time() // DAY) - 1
    last = args.last if args.last is not None else first
    if last < first:
        print("bms: --to is before --from", file=sys.stderr)
        return 2
    try:
        counts = store.report_counts(first, last)
    except StoreUnavailable as exc:
        print(f"bms: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    receiver = str(config.get("dmarc", "report_org") or "")
    email = str(config.get("dmarc", "report_email") or "")
    wanted = {d.lower().rstrip(".") for d in args.domain}
    begin, end = first * DAY, (last + 1) * DAY
    os.makedirs(args.output, exist_ok=True)
    written = 0
    for domain, rows in sorted(merge(counts).items()):
        if wanted and domain not in wanted:
            continue
        name = f"{receiver or 'bms'}!{domain}!{begin}!{end - 1}"
        xml = report_xml(domain, rows, begin, end, receiver or "bms", email, name)
        path = os.path.join(args.output, f"{name}.xml")
        with open(path, "wb") as f:
            f.write(xml)
        print(path)
        written += 1
    if not written:
        print(f"bms: no DMARC data from {datetime.date.fromtimestamp(begin)} "
              f"to {datetime.date.fromtimestamp(end - 1)}", file=sys.stderr)
    return 0
