"""``bms test MESSAGE.eml --client IP --from ADDR --rcpt ADDR…``: the
configured policy on one message, offline, as the daemon would decide it.

The message goes through :class:`bmslib.milter.BmsMilter` driven by
:class:`Milter.testctx.TestCtx`, which plays the MTA through the same
milter session code that serves real connections, so ``bms test`` and the
daemon cannot decide differently.  DNS is real (``[dns]``); the state store
is read but not written (:class:`bmslib.state.overlay.OverlayStore`), no DSN
is sent, nothing is archived or saved, unless ``--commit``.  Printed: each
log line the daemon would write, the result of every stage with the reply
the MTA would send, the edits made at end of message, and the verdict.
Exit status: 0 accept, 1 reject, 2 tempfail, 3 discard (4: the command
could not run — bad arguments, unreadable message or configuration)."""

from __future__ import annotations

import argparse
import dataclasses
import email
import ipaddress
import logging
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from io import BytesIO

import Milter
from Milter import connid, testctx
from Milter.protocol import commands as cmd
from Milter.protocol import constants as C
from Milter.protocol import replies as R

from ..config import Config
from ..dns import DnsResolver
from ..interfaces import DnsTempError
from ..log import escape, setup_logging
from ..logtarget import JsonFormatter
from ..milter import BmsMilter
from ..policy.pipeline import SmtpSession
from ..runtime import RuntimeBuildError, build_runtime, dns_settings, open_store
from ..smtpclient import SmtplibTransport, SmtpOutcome
from ..state.overlay import OverlayStore
from ..state.sqlite import SqliteStore
from .common import CommandError, config_of
from .eml import crlf, split_message

NAME = "test"
HELP = "run the configured policy on one message offline and print what bms would do"

EXIT = {"accept": 0, "reject": 1, "tempfail": 2, "discard": 3}
CANNOT_RUN = 4
BODY_CHUNK = 65535  # what an MTA sends at most per BODY packet
_NAMES = {Milter.CONTINUE: "CONTINUE", Milter.ACCEPT: "ACCEPT", Milter.REJECT: "REJECT",
          Milter.TEMPFAIL: "TEMPFAIL", Milter.DISCARD: "DISCARD", Milter.SKIP: "SKIP"}
_VERDICT = {Milter.ACCEPT: "accept", Milter.REJECT: "reject", Milter.TEMPFAIL: "tempfail",
            Milter.DISCARD: "discard"}
log = logging.getLogger("bms")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("message", metavar="MESSAGE.eml",
                        help="the message as it would arrive (headers, blank line, body)")
    parser.add_argument("--client", required=True, metavar="IP",
                        help="the connecting client's IP address")
    parser.add_argument("--helo", metavar="NAME", help="its HELO name (default: its PTR name)")
    parser.add_argument("--from", dest="sender", required=True, metavar="ADDR",
                        help="the envelope sender ('' for the null sender <>)")
    parser.add_argument("--rcpt", action="append", required=True, metavar="ADDR",
                        help="an envelope recipient; repeat for more")
    parser.add_argument("--auth", metavar="USER", help="the client authenticated as USER")
    parser.add_argument("--ptr", metavar="NAME",
                        help="the client's verified PTR name, as the MTA would pass it "
                             "(default: looked up in DNS and checked forward; none: [IP])")
    parser.add_argument("--mta-name", metavar="NAME",
                        help="the MTA's own name, macro j (default: this host's name)")
    parser.add_argument("--port", type=int, default=25,
                        help="the port the client connected to, macro {daemon_port} (25)")
    parser.add_argument("--commit", action="store_true",
                        help="write to the state store, send DSNs, archive and save as the "
                             "daemon would")
    parser.set_defaults(run=run_test, cannot_run=CANNOT_RUN)


class _RecordingMilter(BmsMilter):
    """:class:`BmsMilter` that also writes down every edit it makes at end of message."""

    def __init__(self, session: SmtpSession, edits: list[str]) -> None:
        super().__init__(session)
        self.edits = edits
        self.new_body = 0

    def addheader(self, field: str, value: str, idx: int = -1) -> None:
        where = "" if idx < 0 else f" (at {idx})"
        self.edits.append(f"add header {escape(field)}: {escape(value)}{where}")
        super().addheader(field, value, idx)

    def chgheader(self, field: str, idx: int, value: str | None) -> None:
        if value:
            self.edits.append(f"change header {escape(field)} #{idx}: {escape(value)}")
        else:
            self.edits.append(f"delete header {escape(field)} #{idx}")
        super().chgheader(field, idx, value)

    def replacebody(self, body: str | bytes) -> None:
        if not self.new_body:
            self.edits.append("replace body")
        self.new_body += len(body)
        super().replacebody(body)

    def chgfrom(self, sender: str, params: str | None = None) -> None:
        self.edits.append(f"change sender to {escape(sender)}")
        super().chgfrom(sender, params)

    def addrcpt(self, rcpt: str, params: str | None = None) -> None:
        self.edits.append(f"add recipient {escape(rcpt)}")
        super().addrcpt(rcpt, params)

    def delrcpt(self, rcpt: str) -> None:
        self.edits.append(f"delete recipient {escape(rcpt)}")
        super().delrcpt(rcpt)


class _NoSendTransport(SmtplibTransport):
    """Call-back probes go out (they decide verdicts); DSNs are only logged."""

    def deliver(self, ip: str, *, helo: str, recipient: str, message: bytes,
                timeout: float) -> SmtpOutcome:
        log.info("bms test: DSN to %s at %s not sent (no --commit)", escape(recipient), ip)
        return SmtpOutcome(250, "not sent (bms test)", "message")


def verified_ptr(config: Config, ip: str) -> str:
    """The client's name as an MTA passes it: a PTR name whose addresses
    include ``ip``, else ``[ip]``."""
    resolver = DnsResolver(dns_settings(config))
    try:
        for name in resolver.ptr(ip):
            if ip in resolver.addresses(name):
                return name
    except DnsTempError:
        pass
    return f"[{ip}]"


class _Mta:
    """Plays the MTA for one message; prints each stage's result."""

    def __init__(self, ctx: testctx.TestCtx, out: Callable[[str], None]) -> None:
        self.ctx = ctx
        self.out = out

    def step(self, label: str, call: Callable[[], int]) -> int:
        self.ctx._reply = None
        rc = call()
        replies = [r for r in self.ctx._replies if isinstance(r, R.ReplyCode)]
        reply = ""
        if replies:
            reply = " " + " / ".join(escape(line) for line in replies[-1].text.decode(
                "utf-8", "surrogateescape").split("\r\n"))
        elif rc == Milter.REJECT:
            reply = " (the MTA's own 5xx reply)"
        elif rc == Milter.TEMPFAIL:
            reply = " (the MTA's own 4xx reply)"
        self.out(f"{label}: {_NAMES.get(rc, str(rc))}{reply}")
        return rc


def _decide(args: argparse.Namespace, ctx: testctx.TestCtx, mta: _Mta,
            headers: list[tuple[str, str]], body: bytes, ptr: str, helo: str) -> str:
    """Feed the message stage by stage; the verdict."""
    family = C.SMFIA_INET if ipaddress.ip_address(args.client).version == 4 else C.SMFIA_INET6
    rc = ctx._negotiate()
    if rc not in (Milter.CONTINUE, Milter.ALL_OPTS):
        return _VERDICT.get(rc, "tempfail")
    packet = cmd.Connect(ptr.encode("utf-8", "surrogateescape"), family, 4000,
                         args.client).encode()
    steps: list[tuple[str, Callable[[], int]]] = [
        (f"connect {ptr} [{args.client}]",
         lambda: ctx._step(C.SMFIC_CONNECT, Milter.M_CONNECT, packet)),
        (f"helo {helo}", lambda: ctx._helo(helo)),
        (f"mail from <{args.sender}>", lambda: ctx._envfrom(f"<{args.sender}>")),
    ]
    for label, call in steps:
        rc = mta.step(escape(label), call)
        if rc != Milter.CONTINUE:
            return _VERDICT.get(rc, "tempfail")
    refused = []
    for rcpt in args.rcpt:
        rc = mta.step(f"rcpt to <{escape(rcpt)}>", partial(ctx._envrcpt, f"<{rcpt}>"))
        if rc in (Milter.ACCEPT, Milter.DISCARD):
            return _VERDICT[rc]
        if rc != Milter.CONTINUE:
            refused.append(rc)
    if len(refused) == len(args.rcpt):
        return "tempfail" if Milter.TEMPFAIL in refused else "reject"
    rc = mta.step("data", ctx._data)
    if rc != Milter.CONTINUE:
        return _VERDICT.get(rc, "tempfail")
    for name, value in headers:
        rc = ctx._header(name, value)
        if rc != Milter.CONTINUE:
            mta.out(f"header {escape(name)}: {_NAMES.get(rc, str(rc))}")
            return _VERDICT.get(rc, "tempfail")
    rc = mta.step("end of headers", ctx._eoh)
    if rc != Milter.CONTINUE:
        return _VERDICT.get(rc, "tempfail")
    rc = ctx._feed_body(BytesIO(body))
    if rc != Milter.CONTINUE:
        mta.out(f"body: {_NAMES.get(rc, str(rc))}")
        return _VERDICT.get(rc, "tempfail")
    rc = mta.step("end of message", ctx._eom)
    return _VERDICT.get(rc, "accept")


@contextmanager
def _log_to_stdout(config: Config) -> Iterator[None]:
    """The daemon's log lines, in its format (``log_format``), on standard output."""
    handler = setup_logging(None)
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(sys.stdout)
    if config.get("milter", "log_format") == "json":
        handler.setFormatter(JsonFormatter())
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)


def run_test(args: argparse.Namespace) -> int:
    try:
        ipaddress.ip_address(args.client)
    except ValueError:
        raise CommandError(f"--client: not an IP address: {escape(args.client)}") from None
    try:
        with open(args.message, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise CommandError(f"{escape(args.message)}: {exc.strerror or exc}") from None
    config = config_of(args)
    try:
        real = open_store(config)
        store = real if args.commit else OverlayStore(real)
        runtime = build_runtime(
            config, store=store, ids=SqliteStore(":memory:"),  # bms test draws no ids
            transport=None if args.commit else _NoSendTransport())
    except RuntimeBuildError as exc:
        raise CommandError(str(exc)) from None
    if not args.commit:
        runtime = dataclasses.replace(runtime, services=dataclasses.replace(
            runtime.services, archive=None, save=None))
    ptr = args.ptr or verified_ptr(config, args.client)
    helo = args.helo or ptr.strip("[]")
    headers, body = split_message(raw)
    edits: list[str] = []

    def make() -> Milter.Base:
        return _RecordingMilter(runtime.session(), edits)

    saved = Milter.factory
    Milter.factory = make
    token = connid.current.set("test")  # the connection id of every line printed
    try:
        with _log_to_stdout(config):
            ctx = testctx.TestCtx()
            ctx._msg = email.message_from_bytes(raw)  # where TestCtx records header edits
            ctx._setsymval("j", args.mta_name or socket.getfqdn())
            ctx._setsymval("{daemon_port}", str(args.port))
            ctx._setsymval("i", "BMSTEST")
            if args.auth:
                ctx._setsymval("{auth_authen}", args.auth)
            mta = _Mta(ctx, print)
            verdict = _decide(args, ctx, mta, headers, crlf(body), ptr, helo)
            ctx._close()
    finally:
        connid.current.reset(token)
        Milter.factory = saved
        store.close()
    for edit in edits:
        print(f"edit: {edit}")
    print(f"verdict: {verdict}" + ("" if args.commit else " (nothing was written: no --commit)"))
    return EXIT[verdict]
