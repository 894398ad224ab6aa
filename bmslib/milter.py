"""``BmsMilter``: pymilter callbacks mapped onto the policy pipeline.

The class holds no policy: each callback hands its event to the connection's
:class:`~bmslib.policy.pipeline.SmtpSession` and turns the decision into a
milter result (and reply text), and at end of message applies the header
edits.  It lives in the package (not in bms.py) so that tests can import it.

Actions the MTA does not grant (issue 13): an MTA may offer fewer actions
than bms uses (a milter_protocol or a sendmail without some of them).  bms
then says once, at negotiation, which actions are missing and which features
they cost, and at end of message skips each edit that needs one, with one log
line per message naming what was skipped; the message gets its verdict.
Refusing the connection instead would tempfail every message for a missing
header.  An edit the framework guard refuses (it never should: every text is
made safe by :mod:`bmslib.safetext`) is logged and skipped the same way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import IO, Any

import Milter

from .log import escape
from .logfields import bind
from .policy.decision import Action, Decision
from .policy.pipeline import SmtpSession
from .safetext import setreply_line

log = logging.getLogger("bms")

BODY_CHUNK = 1 << 16  # replacebody() calls of this size: the new body is never in memory whole

_RESULT = {
    Action.CONTINUE: Milter.CONTINUE,
    Action.ACCEPT: Milter.ACCEPT,
    Action.REJECT: Milter.REJECT,
    Action.TEMPFAIL: Milter.TEMPFAIL,
    Action.DISCARD: Milter.DISCARD,
}


# The actions bms uses, and what is lost without each (the negotiation log line).
FEATURES: dict[int, tuple[str, str]] = {
    Milter.ADDHDRS: ("ADDHDRS", "Received-SPF, Authentication-Results, DKIM-Signature, "
                                "Sender and Cc headers"),
    Milter.CHGHDRS: ("CHGHDRS", "removal of forged result headers and of Received lines, "
                                "defang header changes"),
    Milter.MODBODY: ("CHGBODY", "defanging of dangerous content"),
    Milter.CHGFROM: ("CHGFROM", "SRS sender rewriting"),
    Milter.ADDRCPT: ("ADDRCPT", "SRS bounce recipients, recipient rewriting"),
    Milter.DELRCPT: ("DELRCPT", "SRS bounce recipients, recipient rewriting"),
    Milter.QUARANTINE: ("QUARANTINE", "QUARANTINE verdicts (DMARC, blocklists)"),
}
_WANTED = sum(FEATURES)
_told: set[int] = set()  # missing-action sets already logged in this process
_told_lock = threading.Lock()


def _missing_names(missing: int) -> str:
    return ", ".join(name for bit, (name, _) in FEATURES.items() if missing & bit)


def _tell_missing(actions: int) -> None:
    """Log once per process and set of missing actions which features they cost."""
    missing = _WANTED & ~actions
    if not missing:
        return
    with _told_lock:
        if missing in _told:
            return
        _told.add(missing)
    lost = "; ".join(f"{name}: {what}" for bit, (name, what) in FEATURES.items()
                     if missing & bit)
    log.warning("NEGOTIATION: the MTA does not grant %s; these edits are skipped "
                "(logged per message): %s", _missing_names(missing), lost)


class BmsMilter(Milter.Base):
    """One object per MTA connection."""

    def __init__(self, session: SmtpSession) -> None:
        self.session = session
        self.log_stage = ""  # the callback running now, for JSON log lines (bmslib.logfields)

    def _reply(self, d: Decision) -> int:
        if d.action in (Action.REJECT, Action.TEMPFAIL) and d.code:
            lines = [setreply_line(line) for line in d.lines] or [""]
            self.setreply(d.code, d.xcode or None, *lines)
        return _RESULT[d.action]

    def _log_facts(self) -> dict[str, object]:
        """The connection as JSON log lines show it (bmslib.logfields)."""
        s = self.session
        conn, sender = s.conn, s.sender
        return {"stage": self.log_stage or None,
                "client_ip": conn.ip if conn is not None else None,
                "sender": sender.mailbox if sender is not None else None,
                "recipients": [r.mailbox for r in s.recipients],
                "queue_id": self.getsymval("i") or None}

    def negotiate(self, opts: list[int]) -> int:
        rc = super().negotiate(opts)
        _tell_missing(self._actions)
        return rc

    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        self.log_stage = "connect"
        bind(self._log_facts)
        return self._reply(self.session.connect(hostname, family, hostaddr, self.getsymval))

    def hello(self, hostname: str) -> int:
        self.log_stage = "helo"
        return self._reply(self.session.helo(hostname))

    def envfrom(self, f: str, *params: str) -> int:
        self.log_stage = "mail"
        return self._reply(self.session.mail(f, params, self.getsymval))

    def envrcpt(self, to: str, *params: str) -> int:
        self.log_stage = "rcpt"
        return self._reply(self.session.rcpt(to, params))

    def data(self) -> int:
        self.log_stage = "data"
        return self._reply(self.session.data())

    @Milter.noreply
    def header(self, field: str, value: str) -> int:
        self.log_stage = "header"
        self.session.header(field, value)
        return Milter.CONTINUE

    def eoh(self) -> int:
        self.log_stage = "eoh"
        return self._reply(self.session.eoh())

    @Milter.noreply
    def body(self, chunk: bytes) -> int:
        self.log_stage = "body"
        self.session.body(chunk)
        return Milter.CONTINUE

    def eom(self) -> int:
        self.log_stage = "eom"
        result = self.session.eom(self.getsymval)
        if result.decision.final:
            return self._reply(result.decision)
        skipped: dict[str, int] = {}

        def edit(action: int, what: str, call: Callable[[], object]) -> None:
            if not self._actions & action:
                key = f"{what} ({FEATURES[action][0]} not granted)"
                skipped[key] = skipped.get(key, 0) + 1
                return
            try:
                call()
            except Milter.error as exc:  # a guard refused it: a bug, never a 451
                log.error("edit refused: %s: %s", what, escape(exc))
                skipped[what] = skipped.get(what, 0) + 1

        for e in result.edits:
            if e.op == "delete":
                edit(Milter.CHGHDRS, f"delete {e.name}",
                     partial(self.chgheader, e.name, e.index, ""))
            elif e.op == "change":
                edit(Milter.CHGHDRS, f"change {e.name}",
                     partial(self.chgheader, e.name, e.index, e.value))
            else:
                edit(Milter.ADDHDRS, f"add {e.name}",
                     partial(self.addheader, e.name, e.value, e.index))
        if result.body is not None:
            edit(Milter.MODBODY, "new body", partial(self._replace_body, result.body))
            result.body.close()
        if result.new_sender is not None:
            edit(Milter.CHGFROM, "SRS sender",
                 partial(self.chgfrom, result.new_sender))
        for rcpt in result.del_rcpts:
            edit(Milter.DELRCPT, "delete recipient", partial(self.delrcpt, rcpt))
        for rcpt in result.add_rcpts:
            edit(Milter.ADDRCPT, "add recipient", partial(self.addrcpt, rcpt))
        if result.quarantine:
            edit(Milter.QUARANTINE, "quarantine",
                 partial(self.quarantine, result.quarantine))
        if skipped:
            log.warning("SKIPPED EDITS: %s", ", ".join(
                what if n == 1 else f"{what} x{n}" for what, n in skipped.items()))
        return Milter.CONTINUE

    def _replace_body(self, body: IO[bytes]) -> None:
        body.seek(0)
        while chunk := body.read(BODY_CHUNK):
            self.replacebody(chunk)

    def abort(self) -> int:
        self.log_stage = "abort"
        self.session.abort()
        return Milter.CONTINUE

    def close(self) -> int:
        self.log_stage = "close"
        self.session.close()
        return Milter.CONTINUE
