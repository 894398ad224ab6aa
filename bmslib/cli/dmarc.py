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

from ..policy.dmarcreport import DAY, merge, report_xml
from .common import CommandError, add_action, config_of, opened_store


def _day(text: str) -> int:
    try:
        d = datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, got {text!r}") from None
    return (d - datetime.date(1970, 1, 1)).days


NAME = "dmarc"
HELP = "write DMARC aggregate reports (RFC 7489 XML) from the state store's counts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = add_action(sub, "report", "write one aggregate-report XML file per policy domain",
                   run_report)
    p.add_argument("--from", dest="first", type=_day, metavar="YYYY-MM-DD",
                   help="first UTC day of the period (default: yesterday)")
    p.add_argument("--to", dest="last", type=_day, metavar="YYYY-MM-DD",
                   help="last UTC day of the period (default: the first day)")
    p.add_argument("--domain", action="append", default=[],
                   help="only this policy domain (repeatable)")
    p.add_argument("-o", "--output", default=".", metavar="DIRECTORY",
                   help="where the XML files go (default: the current directory)")


def run_report(args: argparse.Namespace) -> int:
    config = config_of(args)
    first = args.first if args.first is not None else int(time.time() // DAY) - 1
    last = args.last if args.last is not None else first
    if last < first:
        raise CommandError("--to is before --from")
    with opened_store(config) as store:
        counts = store.report_counts(first, last)
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
        print(f"bms dmarc: no DMARC data from {datetime.date.fromtimestamp(begin)} "
              f"to {datetime.date.fromtimestamp(end - 1)}", file=sys.stderr)
    return 0
