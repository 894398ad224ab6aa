"""An SMTP client for tests: smtplib, plus every reply of a transaction kept.

The same client drives a TCP listener (Postfix, sendmail ``-bD``) and a
sendmail ``-bs`` child over a socket pair.  smtplib sends one command and
waits for its reply before the next, which sendmail ``-bs`` requires (it
answers ``554`` to a pipelined dialogue).
"""

from __future__ import annotations

import re
import smtplib
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

CLIENT_NAME = "client.example.test"

_QUEUE_ID = (
    re.compile(r"queued as ([0-9A-Za-z]+)"),  # Postfix: 2.0.0 Ok: queued as 4Abc…
    re.compile(r"^\d\.\d\.\d ([0-9A-Za-z]+) Message accepted"),  # sendmail
)


@dataclass(frozen=True)
class Reply:
    code: int
    text: str  # the lines of a multi-line reply joined with "\n", codes removed

    @classmethod
    def of(cls, reply: tuple[int, bytes]) -> Reply:
        return cls(reply[0], reply[1].decode("utf-8", "replace"))

    @property
    def lines(self) -> list[str]:
        return self.text.split("\n")

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@dataclass
class Transaction:
    """The replies of one MAIL/RCPT…/DATA transaction."""

    mail: Reply
    rcpt: dict[str, Reply] = field(default_factory=dict)
    data: Reply | None = None

    @property
    def accepted(self) -> list[str]:
        return [r for r, reply in self.rcpt.items() if reply.ok]

    @property
    def queue_id(self) -> str | None:
        """The queue ID from the final DATA reply, for Postfix and sendmail."""
        if self.data is None or self.data.code != 250:
            return None
        for pattern in _QUEUE_ID:
            m = pattern.search(self.data.text)
            if m:
                return m.group(1)
        return None


class SmtpClient(smtplib.SMTP):
    """``smtplib.SMTP`` that never resolves names and records transactions."""

    def __init__(self, host: str = "", port: int = 0, *, timeout: float = 30.0,
                 local_hostname: str = CLIENT_NAME,
                 source_address: tuple[str, int] | None = None) -> None:
        # local_hostname given: smtplib would otherwise call socket.getfqdn().
        super().__init__(host, port, local_hostname=local_hostname, timeout=timeout,
                         source_address=source_address)

    @classmethod
    def over_socket(cls, sock: socket.socket, timeout: float = 30.0) -> SmtpClient:
        """A client on an already connected socket (e.g. a pipe to ``sendmail -bs``);
        reads the greeting."""
        client = cls(timeout=timeout)
        sock.settimeout(timeout)
        client.sock = sock
        code, msg = client.getreply()
        if code != 220:
            client.close()
            raise smtplib.SMTPConnectError(code, msg)
        return client

    @property
    def local_address(self) -> tuple[str, int] | tuple[str, int, int, int] | str:
        """This end of the TCP connection (what the MTA reports as the client)."""
        assert self.sock is not None
        return self.sock.getsockname()  # type: ignore[no-any-return]

    def transaction(self, sender: str, recipients: Iterable[str], message: bytes | None,
                    *, mail_options: Sequence[str] = (),
                    rcpt_options: Mapping[str, Sequence[str]] | None = None) -> Transaction:
        """MAIL FROM, each RCPT TO, then DATA if a recipient was accepted.

        Nothing raises on a refusal: every reply is in the result.  ``message``
        None stops after the recipients (the caller may RSET or go on)."""
        if not self.does_esmtp:
            self.ehlo_or_helo_if_needed()
        t = Transaction(Reply.of(self.mail(sender, list(mail_options))))
        if not t.mail.ok:
            return t
        for rcpt in recipients:
            opts = list((rcpt_options or {}).get(rcpt, ()))
            t.rcpt[rcpt] = Reply.of(self.rcpt(rcpt, opts))
        if message is None or not t.accepted:
            return t
        try:
            t.data = Reply.of(self.data(message))
        except smtplib.SMTPDataError as exc:  # DATA itself refused
            err = exc.smtp_error
            text = err.decode("utf-8", "replace") if isinstance(err, bytes) else str(err)
            t.data = Reply(exc.smtp_code, text)
        return t

    def reset(self) -> Reply:
        return Reply.of(self.rset())

    def close_politely(self) -> None:
        """QUIT if the connection is still there, then close."""
        try:
            if self.sock is not None:
                self.quit()
        except (smtplib.SMTPServerDisconnected, OSError):
            pass
        finally:
            self.close()
