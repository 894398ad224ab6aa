"""``bms access query TAG SUBJECT``: what the configured access file says
for a lookup, like ``postmap -q``, with the line that said it, or the
built-in default that applies when no line does (SPF-<Result> and
HELO-<Result> keys; :func:`bmslib.policy.spf.default_policy`)."""

from __future__ import annotations

import argparse

from ..access import AccessFile
from ..log import escape
from ..policy.decision import AccessKind, AccessValue
from ..policy.spf import HELO_KEYS, KEYS, default_policy
from ..runtime import RuntimeBuildError, open_access, spf_settings
from .common import CommandError, add_action, config_of

NAME = "access"
HELP = "look up the access file as bms does (like postmap -q)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = add_action(sub, "query", "print the value for TAG and SUBJECT, and which line (or "
                                 "built-in default) gave it; exit 1 when nothing applies",
                   run_query)
    p.add_argument("tag", metavar="TAG", help="e.g. SPF-Softfail, SMTP-Auth, Connect, From")
    p.add_argument("subject", metavar="SUBJECT",
                   help="an address, user@, domain, IP address or user name")


def value_text(value: AccessValue) -> str:
    """A value as it is written in the access file."""
    if value.kind is AccessKind.ERROR:
        reply = " ".join(part for part in (value.code, value.xcode, value.text) if part)
        return f'ERROR:"{reply}"'
    return str(value.kind.value)


def run_query(args: argparse.Namespace) -> int:
    config = config_of(args)
    try:
        access = open_access(config)
    except RuntimeBuildError as exc:
        raise CommandError(str(exc)) from None
    tag, subject = args.tag, args.subject
    hit = access.explain(tag, subject) if isinstance(access, AccessFile) else None
    if hit is not None and hit.value is not None:
        print(f"{escape(value_text(hit.value))}\t{escape(hit.path)}:{hit.line} "
              f"({escape(hit.key)})")
        return 0
    domain = subject.strip().strip("<>").rpartition("@")[2].lower()
    settings = spf_settings(config)
    defaults = {key.lower(): default_policy(settings, result, domain)
                for result, key in KEYS.items()}
    defaults.update((key.lower(), AccessKind.REJECT) for key in HELO_KEYS.values())
    kind = defaults.get(tag.lower())
    skipped = (f"{escape(hit.path)}:{hit.line} ({escape(hit.key)}) says SKIP; "
               if hit is not None else "")
    if kind is None:
        where = "no access file" if not isinstance(access, AccessFile) else "no entry"
        print(f"{skipped or where + ': '}nothing applies to {escape(tag)} {escape(subject)}")
        return 1
    print(f"{kind.value}\t{skipped}built-in default for {escape(tag)}")
    return 0
