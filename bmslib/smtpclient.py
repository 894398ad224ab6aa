"""SMTP client sessions for call-back verification (CBV) and DSN notices.

One call is one SMTP session with one MX address, bounded by a hard deadline:

* probe:   banner, EHLO (HELO if refused), ``MAIL FROM:<>``, ``RCPT TO:<addr>``, QUIT;
* deliver: the same, then DATA and the whole message, then QUIT.

The policy (:mod:`bmslib.policy.cbv`) sees only the :class:`SmtpTransport`
protocol and the :class:`SmtpOutcome` it returns, so it is unit-tested with a
fake; :class:`SmtplibTransport` is the real adapter over :mod:`smtplib`.

Rules the adapter keeps:

* It connects to an IP address only; names are resolved by the caller through
  the configured resolver, never by the system resolver (``smtplib`` is given
  our HELO name, so it never calls ``socket.getfqdn()`` either).
* ``timeout`` is a deadline for the whole session.  Every receive and send
  gets the time that is left as its socket timeout, so a server that answers
  slowly, or dribbles a reply a byte at a time, cannot hold us past it.
* What the server says is untrusted: reply text is reduced to one printable
  ASCII line (it ends up in our own SMTP reply and in the log), and a session
  that receives more than :data:`MAX_RECEIVE` bytes is dropped.
* A banner whose first word is our own name means the MX is this very host
  (a domain pointing its MX at us, or MX 127.0.0.1): the session ends with
  QUIT and ``self_banner`` set; asking ourselves proves nothing about the sender.
"""

from __future__ import annotations

import ipaddress
import re
import smtplib
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

SMTP_PORT: Final = 25
MAX_RECEIVE: Final = 256 * 1024  # bytes per session: banner, EHLO list and a few replies
QUIT_WAIT: Final = 2.0  # at most this long for the answer to QUIT (the result is known)
MAX_TEXT: Final = 300  # characters of server text kept

# RFC 5321 atext; a local part that is not a dot-atom of these is quoted.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*\Z")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                     r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\Z")
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]+")


def reply_text(raw: bytes | str) -> str:
    """Server text as one printable ASCII line: line breaks of a multi-line
    reply become ``" / "``, anything else unprintable (and ``%``, which
    sendmail's ``smfi_setreply`` would interpret) becomes ``?``; at most
    :data:`MAX_TEXT` characters."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    lines = [_NOT_PRINTABLE.sub("?", line).strip() for line in text.splitlines()]
    out = " / ".join(line for line in lines if line).replace("%", "?")
    if len(out) > MAX_TEXT:
        out = out[:MAX_TEXT - 3] + "..."
    return out


def mailbox_path(local: str, domain: str) -> str:
    """``local@domain`` as an RFC 5321 path argument (without the brackets):
    the local part quoted when it is not a dot-atom.  Raises ValueError for what
    cannot be sent without SMTPUTF8 or would break the command line (non-ASCII,
    control characters, an address literal or a malformed domain)."""
    if not local or not domain:
        raise ValueError("address has no local part or no domain")
    if not _DOMAIN.match(domain) or len(domain) > 253:
        raise ValueError(f"domain {domain!r} is not a host name")
    if _DOT_ATOM.match(local):
        path = f"{local}@{domain}"
    else:
        if _NOT_PRINTABLE.search(local):
            raise ValueError("local part is not printable ASCII")
        quoted = local.replace("\\", "\\\\").replace('"', '\\"')
        path = f'"{quoted}"@{domain}'
    if len(path) > 254:
        raise ValueError("address longer than 254 characters")
    return path


@dataclass(frozen=True)
class SmtpOutcome:
    """How one session ended.

    ``code`` is the reply code of the step that decided (the 250 to RCPT for a
    probe, to the end of DATA for a delivery, or the first refusal); 0 when
    there was no reply at all (connection refused or reset, deadline reached),
    and then ``text`` says what happened locally.  ``step`` is one of
    ``connect``, ``banner``, ``EHLO``, ``HELO``, ``MAIL``, ``RCPT``, ``DATA``
    (the 354 stage) and ``message`` (the reply after the final dot)."""

    code: int
    text: str
    step: str
    timed_out: bool = False  # the deadline ended the session
    self_banner: bool = False  # the banner named our own host: nothing was asked

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300


class SmtpTransport(Protocol):
    """SMTP sessions as the verifier uses them (see the module docstring)."""

    def probe(self, ip: str, *, helo: str, recipient: str, timeout: float) -> SmtpOutcome:
        """``MAIL FROM:<>`` and ``RCPT TO:<recipient>`` at ``ip``, then QUIT."""
        ...

    def deliver(self, ip: str, *, helo: str, recipient: str, message: bytes,
                timeout: float) -> SmtpOutcome:
        """``MAIL FROM:<>``, ``RCPT TO:<recipient>`` and DATA with ``message``
        (CRLF line ends, not dot-stuffed) at ``ip``, then QUIT."""
        ...


# --- the smtplib adapter ------------------------------------------------------------


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.expired = False

    def left(self) -> float:
        """Seconds left; raises TimeoutError (and remembers it) when none are."""
        left = self.end - time.monotonic()
        if left <= 0:
            self.expired = True
            raise TimeoutError("deadline reached")
        return left

    def shorten(self, seconds: float) -> None:
        self.end = min(self.end, time.monotonic() + seconds)


class _DeadlineSocket(socket.socket):
    """A socket whose every send and receive is bounded by a shared deadline,
    and whose total input is capped.  ``smtplib`` reads through
    ``makefile()``, which calls :meth:`recv_into`, and writes with
    :meth:`sendall`."""

    deadline: _Deadline
    received: int = 0

    def _arm(self) -> None:
        self.settimeout(self.deadline.left())

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self._arm()
        data = super().recv(bufsize, flags)
        self._count(len(data))
        return data

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        self._arm()
        n = super().recv_into(buffer, nbytes, flags)
        self._count(n)
        return n

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        self._arm()  # since Python 3.5 the timeout bounds the whole sendall
        super().sendall(data, flags)

    def _count(self, n: int) -> None:
        self.received += n
        if self.received > MAX_RECEIVE:
            raise ConnectionError(f"server sent more than {MAX_RECEIVE} bytes")


class _Session(smtplib.SMTP):
    step = "connect"  # the step in progress, for an outcome without a reply

    def __init__(self, helo: str, deadline: _Deadline) -> None:
        # local_hostname given: smtplib would otherwise call socket.getfqdn().
        super().__init__(local_hostname=helo, timeout=max(deadline.end - time.monotonic(), 0.001))
        self._deadline = deadline

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        ip = ipaddress.ip_address(host)  # never a name: no resolver behind our back
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = _DeadlineSocket(family, socket.SOCK_STREAM)
        sock.deadline = self._deadline
        try:
            sock.settimeout(self._deadline.left())
            sock.connect((str(ip), port))
        except BaseException:
            sock.close()
            raise
        return sock


def _dot_stuff(message: bytes) -> bytes:
    """RFC 5321 4.5.2 transparency, and the final ``.``."""
    data = re.sub(rb"(?m)^\.", b"..", message)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _timed_out(exc: BaseException, deadline: _Deadline) -> bool:
    if deadline.expired or time.monotonic() >= deadline.end:
        return True
    seen: BaseException | None = exc
    while seen is not None:  # smtplib re-raises a timeout as SMTPServerDisconnected
        if isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return "connection closed by the server"
    if isinstance(exc, smtplib.SMTPResponseException):  # smtplib's "500 Line too long"
        return "malformed reply: " + reply_text(exc.smtp_error)
    return reply_text(f"{type(exc).__name__}: {exc}")


class SmtplibTransport:
    """:class:`SmtpTransport` over :mod:`smtplib`; ``port`` is 25 except in tests."""

    def __init__(self, port: int = SMTP_PORT) -> None:
        self.port = port

    def probe(self, ip: str, *, helo: str, recipient: str, timeout: float) -> SmtpOutcome:
        return self._session(ip, helo, recipient, None, timeout)

    def deliver(self, ip: str, *, helo: str, recipient: str, message: bytes,
                timeout: float) -> SmtpOutcome:
        return self._session(ip, helo, recipient, message, timeout)

    def _session(self, ip: str, helo: str, recipient: str, message: bytes | None,
                 timeout: float) -> SmtpOutcome:
        # Nothing from outside may break a command line (smtplib refuses CR and
        # LF too; this also keeps other control characters and 8-bit out).
        if not helo or " " in helo or _NOT_PRINTABLE.search(helo):
            raise ValueError(f"HELO name {helo!r} cannot be sent in an SMTP command")
        if not recipient or _NOT_PRINTABLE.search(recipient):
            raise ValueError(f"recipient {recipient!r} cannot be sent in an SMTP command")
        ipaddress.ip_address(ip)  # ValueError for a name
        deadline = _Deadline(timeout)
        session = _Session(helo, deadline)
        try:
            code, banner = session.connect(ip, self.port)
            outcome = self._dialogue(session, code, banner, helo, recipient, message)
            deadline.shorten(QUIT_WAIT)
            try:
                session.quit()
            except (OSError, smtplib.SMTPException):
                pass
            return outcome
        except (OSError, smtplib.SMTPException) as exc:
            # smtplib's own "500 Line too long" is no answer from the server.
            timed_out = _timed_out(exc, deadline)
            text = f"no answer within {timeout:.3g}s" if timed_out else _describe(exc)
            return SmtpOutcome(0, text, session.step, timed_out=timed_out)
        finally:
            session.close()

    @staticmethod
    def _dialogue(session: _Session, code: int, banner: bytes, helo: str,
                  recipient: str, message: bytes | None) -> SmtpOutcome:
        """Everything after the connect; the first refusal ends it."""
        session.step = "banner"
        if code != 220:
            return _outcome(code, banner, "banner")
        text = reply_text(banner)
        words = text.split()
        if words and words[0].rstrip(".").lower() == helo.rstrip(".").lower():
            return SmtpOutcome(code, text, "banner", self_banner=True)
        session.step = "EHLO"
        code, reply = session.ehlo(helo)
        if not 200 <= code < 300:
            session.step = "HELO"
            code, reply = session.helo(helo)
            if not 200 <= code < 300:
                return _outcome(code, reply, "HELO")
        session.step = "MAIL"
        code, reply = session.docmd("MAIL", "FROM:<>")
        if not 200 <= code < 300:
            return _outcome(code, reply, "MAIL")
        session.step = "RCPT"
        code, reply = session.docmd("RCPT", f"TO:<{recipient}>")
        if message is None or not 200 <= code < 300:
            return _outcome(code, reply, "RCPT")
        session.step = "DATA"
        code, reply = session.docmd("DATA")
        if code != 354:
            return _outcome(code, reply, "DATA")
        session.step = "message"
        session.send(_dot_stuff(message))
        code, reply = session.getreply()
        return _outcome(code, reply, "message")


def _outcome(code: int, reply: bytes, step: str) -> SmtpOutcome:
    if not 200 <= code <= 599:  # smtplib gives -1 for a line without a code
        return SmtpOutcome(0, "malformed reply: " + reply_text(reply), step)
    return SmtpOutcome(code, reply_text(reply), step)
