"""``BmsMilter``: pymilter callbacks mapped onto the policy pipeline.

The class holds no policy: each callback hands its event to the connection's
:class:`~bmslib.policy.pipeline.SmtpSession` and turns the decision into a
milter result (and reply text), and at end of message applies the header
edits.  It lives in the package (not in bms.py) so that tests can import it.
"""

from __future__ import annotations

from typing import Any

import Milter

from .logfields import bind
from .policy.decision import Action, Decision, reply_line
from .policy.pipeline import SmtpSession

BODY_CHUNK = 1 << 16  # replacebody() calls of this size: the new body is never in memory whole

_RESULT = {
    Action.CONTINUE: Milter.CONTINUE,
    Action.ACCEPT: Milter.ACCEPT,
    Action.REJECT: Milter.REJECT,
    Action.TEMPFAIL: Milter.TEMPFAIL,
    Action.DISCARD: Milter.DISCARD,
}


def _reply_line(text: str) -> str:
    """setreply text is a printf format to sendmail: a lone % is doubled,
    then the line is cut again in case the doubling made it too long."""
    return reply_line(text.replace("%", "%%"))


class BmsMilter(Milter.Base):
    """One object per MTA connection."""

    def __init__(self, session: SmtpSession) -> None:
        self.session = session
        self.log_stage = ""  # the callback running now, for JSON log lines (bmslib.logfields)

    def _reply(self, d: Decision) -> int:
        if d.action in (Action.REJECT, Action.TEMPFAIL) and d.code:
            lines = [_reply_line(line) for line in d.lines] or [""]
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
        for edit in result.edits:
            if edit.op == "delete":
                self.chgheader(edit.name, edit.index, "")
            elif edit.op == "change":
                self.chgheader(edit.name, edit.index, edit.value)
            else:
                self.addheader(edit.name, edit.value, edit.index)
        if result.body is not None:
            result.body.seek(0)
            while chunk := result.body.read(BODY_CHUNK):
                self.replacebody(chunk)
            result.body.close()
        if result.new_sender is not None:
            self.chgfrom(result.new_sender)
        for rcpt in result.del_rcpts:
            self.delrcpt(rcpt)
        for rcpt in result.add_rcpts:
            self.addrcpt(rcpt)
        if result.quarantine:
            self.quarantine(result.quarantine)
        return Milter.CONTINUE

    def abort(self) -> int:
        self.log_stage = "abort"
        self.session.abort()
        return Milter.CONTINUE

    def close(self) -> int:
        self.log_stage = "close"
        self.session.close()
        return Milter.CONTINUE
