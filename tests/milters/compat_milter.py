"""A milter written only against pymilter 1.0.x's public API.

It touches every part of that API a real milter uses (the decorators, the
actions, multi-line replies, macros), so the unit tier can run it under
``Milter.testctx.TestCtx`` and ``Milter.test.TestBase`` and the socket and
MTA tiers can serve it unchanged.  Everything it saw and did is recorded on
the instance.

What it does, driven by the message so that a real MTA can trigger each path:

* HELO ``reject.example`` -> 550 (one-line ``setreply``).
* RCPT whose address starts with ``<reject`` -> 550 with a two-line reply; the
  transaction goes on.
* End of message, always: ``progress()``; append ``X-Compat: checked``; insert
  ``X-Compat-Top: first`` at index 0; add ``<bcc@example.com>`` with
  ``NOTIFY=NEVER``.
* A recipient starting with ``<drop`` is deleted.
* A header ``X-Remove`` is deleted (``chgheader`` with an empty value).
* A body containing ``REPLACE`` is replaced (``REPLACE`` -> ``REPLACED``).
* Sender ``<change@example.net>`` becomes ``<changed@example.net>``.
* Subject containing ``quarantine`` -> ``quarantine('compat milter')``.
* Subject containing ``reject`` -> 550 with a three-line reply.
"""

from __future__ import annotations

from typing import Any

import Milter

BCC = "<bcc@example.com>"
BCC_PARAMS = "NOTIFY=NEVER"
NEW_SENDER = "<changed@example.net>"
QUARANTINE_REASON = "compat milter"
REJECT_RCPT_LINES = ("recipient refused", "try another one")
REJECT_MSG_LINES = ("message refused", "by the compat milter", "100%% sure")


class CompatMilter(Milter.Base):
    """pymilter-style milter; one instance per MTA connection."""

    def __init__(self) -> None:
        self.id = Milter.uniqueID()
        self.calls: list[str] = []
        self.hostname: str | None = None
        self.family: int | None = None
        self.hostaddr: Any = None
        self.connect_macro: str | None = None
        self.helo: str | None = None
        self.mailfrom: str | None = None
        self.mail_params: dict[str, str | None] = {}
        self.auth_authen: str | None = None
        self.auth_type: str | None = None
        self.queue_id: str | None = None
        self.rcpts: list[str] = []
        self.headers: list[tuple[str, bytes]] = []
        self.remove_header = False
        self.subject = ""
        self.body_chunks: list[bytes] = []
        self.eom_macro: str | None = None
        self.closed = 0
        self.aborted = 0

    # --- callbacks -------------------------------------------------------------------

    @Milter.noreply
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        self.calls.append("connect")
        self.hostname, self.family, self.hostaddr = hostname, family, hostaddr
        self.connect_macro = self.getsymval("j")
        return Milter.CONTINUE

    def hello(self, hostname: str) -> int:
        self.calls.append("hello")
        self.helo = hostname
        if hostname == "reject.example":
            self.setreply("550", "5.7.1", "HELO refused")
            return Milter.REJECT
        return Milter.CONTINUE

    @Milter.symlist("{auth_authen}", "i")
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.calls.append("envfrom")
        # Per-message state is reset here: one instance serves every message.
        self.mailfrom = mailfrom
        self.mail_params = Milter.param2dict(list(params))
        self.auth_authen = self.getsymval("{auth_authen}")
        self.auth_type = self.getsymval("{auth_type}")  # not in the symlist
        self.queue_id = self.getsymval("i")
        self.rcpts = []
        self.headers = []
        self.remove_header = False
        self.subject = ""
        self.body_chunks = []
        return Milter.CONTINUE

    def envrcpt(self, to: str, *params: str) -> int:
        self.calls.append("envrcpt")
        if to.startswith("<reject"):
            self.setreply("550", "5.1.1", *REJECT_RCPT_LINES)
            return Milter.REJECT
        self.rcpts.append(to)
        return Milter.CONTINUE

    @Milter.nocallback
    def data(self) -> int:
        return Milter.CONTINUE

    @Milter.noreply
    @Milter.decode("bytes")
    def header(self, field: str, value: bytes) -> int:  # type: ignore[override]
        self.calls.append("header")
        self.headers.append((field, value))
        if field.lower() == "x-remove":
            self.remove_header = True
        elif field.lower() == "subject":
            self.subject = value.decode("utf-8", "replace")
        return Milter.CONTINUE

    @Milter.noreply
    def eoh(self) -> int:
        self.calls.append("eoh")
        return Milter.CONTINUE

    def body(self, chunk: bytes) -> int:
        self.calls.append("body")
        self.body_chunks.append(chunk)
        return Milter.CONTINUE

    def eom(self) -> int:
        self.calls.append("eom")
        self.eom_macro = self.getsymval("i")
        self.progress()
        self.addheader("X-Compat", "checked")
        self.addheader("X-Compat-Top", "first", 0)
        if self.remove_header:
            self.chgheader("X-Remove", 1, "")
        self.addrcpt(BCC, BCC_PARAMS)
        for rcpt in self.rcpts:
            if rcpt.startswith("<drop"):
                self.delrcpt(rcpt)
        body = b"".join(self.body_chunks)
        if b"REPLACE" in body:
            self.replacebody(body.replace(b"REPLACE", b"REPLACED"))
        if self.mailfrom == "<change@example.net>":
            self.chgfrom(NEW_SENDER)
        if "quarantine" in self.subject:
            self.quarantine(QUARANTINE_REASON)
        if "reject" in self.subject:
            self.setreply("550", "5.7.1", *REJECT_MSG_LINES)
            return Milter.REJECT
        return Milter.CONTINUE

    def abort(self) -> int:
        self.calls.append("abort")
        self.aborted += 1
        return Milter.CONTINUE

    def close(self) -> int:
        self.calls.append("close")
        self.closed += 1
        return Milter.CONTINUE
