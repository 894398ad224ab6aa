"""bms: the policy milter daemon for sendmail and Postfix.

This is the composition root.  Until the policy pipeline lands, the daemon
runs a milter that logs each SMTP transaction and accepts it; everything
around it (sockets, workers, logging, MTA configuration hints) is real.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys
from typing import Any

import Milter
from Milter import connid
from Milter.server import SocketSpecError, parse_socket_spec

DEFAULT_SOCKET = "inet:8894@127.0.0.1"
DEFAULT_NAME = "pythonfilter"
LOG_FORMAT = "%(asctime)s [%(connid)s] %(message)s"
DATE_FORMAT = "%Y%b%d %H:%M:%S"

log = logging.getLogger("bms")


def _escape(text: str) -> str:
    """Untrusted text for one log line: no control characters, no line breaks."""
    return text.encode("unicode_escape", "backslashreplace").decode("ascii") \
        if any(ord(c) < 32 or ord(c) == 127 or 0xD800 <= ord(c) <= 0xDFFF for c in text) else text


class LoggingMilter(Milter.Base):
    """Logs every stage of a transaction and accepts the message."""

    def __init__(self) -> None:
        self.recipients: list[str] = []

    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        log.info("connect from %s at %s", _escape(hostname), hostaddr)
        return Milter.CONTINUE

    def hello(self, hostname: str) -> int:
        log.info("hello from %s", _escape(hostname))
        return Milter.CONTINUE

    def envfrom(self, f: str, *params: str) -> int:
        self.recipients = []
        log.info("mail from %s", _escape(" ".join((f, *params))))
        return Milter.CONTINUE

    def envrcpt(self, to: str, *params: str) -> int:
        self.recipients.append(to)
        log.info("rcpt to %s", _escape(" ".join((to, *params))))
        return Milter.CONTINUE

    def eom(self) -> int:
        queue_id = self.getsymval("i") or "-"
        log.info("ACCEPT: queue id %s, %d recipients", _escape(queue_id), len(self.recipients))
        return Milter.ACCEPT

    def abort(self) -> int:
        return Milter.CONTINUE

    def close(self) -> int:
        return Milter.CONTINUE


def mta_config_lines(socket_spec: str, name: str) -> list[str]:
    """The sendmail X line and the Postfix lines that reach ``socket_spec``."""
    spec = parse_socket_spec(socket_spec)
    if spec.is_unix:
        postfix = f"unix:{spec.address}"
    else:
        assert isinstance(spec.address, tuple)
        host, port = spec.address
        postfix = f"inet:[{host}]:{port}" if ":" in host else f"inet:{host}:{port}"
    return [
        f"sendmail.cf: X{name}, S={socket_spec}, F=T, T=C:5m;S:20s;R:60s;E:5m",
        f"sendmail.cf: O InputMailFilters={name}",
        f"sendmail.mc: INPUT_MAIL_FILTER(`{name}', "
        f"`S={socket_spec}, F=T, T=C:5m;S:20s;R:60s;E:5m')",
        f"postfix main.cf: smtpd_milters = {postfix}",
        f"postfix main.cf: non_smtpd_milters = {postfix}",
        "postfix main.cf: milter_default_action = tempfail",
    ]


def setup_logging(logdir: str | None) -> None:
    handler: logging.Handler
    if logdir:
        os.makedirs(logdir, exist_ok=True)
        handler = logging.handlers.WatchedFileHandler(os.path.join(logdir, "milter.log"))
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
    handler.addFilter(connid.ConnectionIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bms", description=__doc__.splitlines()[0])
    p.add_argument("--socket", default=DEFAULT_SOCKET,
                   help=f"milter socket (libmilter syntax; default {DEFAULT_SOCKET})")
    p.add_argument("--name", default=DEFAULT_NAME, help="milter name in the MTA configuration")
    p.add_argument("--logdir", default=None, help="write milter.log here (default: stderr)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the MTA")
    p.add_argument("--foreground", action="store_true", help="do not detach (the only mode yet)")
    p.add_argument("--print-mta-config", action="store_true",
                   help="print the sendmail and Postfix lines for this socket and exit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        lines = mta_config_lines(args.socket, args.name)
    except SocketSpecError as exc:
        print(f"bms: {exc}", file=sys.stderr)
        return 2
    if args.print_mta_config:
        print("\n".join(lines))
        return 0
    setup_logging(args.logdir)
    log.info("bms starting on %s (%d worker%s)", args.socket, args.workers,
             "" if args.workers == 1 else "s")
    for line in lines:
        log.info("%s", line)
    Milter.factory = LoggingMilter
    Milter.setworkers(args.workers)
    try:
        Milter.runmilter(args.name, args.socket, args.timeout)
    except Milter.error as exc:
        log.error("cannot run: %s", exc)
        return 1
    log.info("bms stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
