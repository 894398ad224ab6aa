"""A pymilter-API milter that uses every feature, steered by the addresses.

What it does depends on the local part of each recipient (the part before
``@``), so a test chooses the behaviour through the envelope alone:

=================  ===========================================================
``reject``         RCPT rejected: ``550 5.7.1 custom reject text`` (setreply)
``reject-multi``   RCPT rejected with a three-line 550 reply
``tempfail``       RCPT tempfailed (TEMPFAIL, the MTA's default 4xx text)
``tempfail-text``  RCPT tempfailed with ``451 4.7.1 custom tempfail text``
``addheader``      at EOM, also insert ``X-Feature-Top`` at index 0 and
                   ``X-Feature-Second`` at index 1, and add a folded
                   ``X-Feature-Folded`` and a UTF-8 ``X-Feature-Utf8``
``body``           at EOM, replace the body with :data:`REPLACED_BODY`
``bigbody``        at EOM, replace the body with :data:`BIG_BODY` (1.5 MiB)
``addrcpt``        at EOM, add ``added@`` and ``added-par@`` (with
                   ``NOTIFY=NEVER``) in the recipient's domain
``delrcpt``        at EOM, delete ``victim@`` in the recipient's domain
``chgfrom``        at EOM, change the envelope sender to ``changed-sender@``
``delheader``      at EOM, delete the first ``X-Remove-Me`` header
                   (``chgheader(name, 1, '')``) and change ``Subject``
``reject-eom``     at EOM, reject the message with ``550 5.7.2 eom reject``
``crash``          ``envrcpt`` raises (the exception policy answers)
``crash-eom``      at EOM, add a header, then raise
=================  ===========================================================

A header called ``X-Crash`` makes ``header`` (a no-reply callback) raise.

Whatever the recipients, at EOM it appends headers that report what it saw
for this message (see :data:`REPORT_HEADERS`), so the delivered message
shows the milter's per-message state: the options the MTA offered at
negotiation (as ``negotiate()`` saw them), recipients, sender, message number in
the connection, recipients of a transaction aborted before this one (RSET),
the client address given to ``connect``, HELO, macros, body size and digest.

State is kept per message and cleared only in ``eom`` and ``abort`` (not in
``envfrom``), so a missing ABORT would make state leak into the next message.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar

import Milter

REPLACED_BODY = b"This body was replaced by the milter.\r\nSecond line.\r\n"
# 1.5 MiB: more than one REPLBODY packet, and spooled to disk by the framework.
BIG_BODY = b"".join(b"big replacement body line %07d ........................\r\n" % i
                    for i in range(24576))
REPORT_HEADERS = (
    "X-Feature-Offer", "X-Feature-Rcpts", "X-Feature-From", "X-Feature-Msgno", "X-Feature-Aborted",
    "X-Feature-Client", "X-Feature-Helo", "X-Feature-Macros", "X-Feature-Body",
    "X-Feature-Headers",
)
MACROS = ("j", "i", "{mail_addr}", "{rcpt_addr}", "{daemon_name}", "_")


@dataclass
class Event:
    """One callback as the milter saw it (for tests that look inside)."""

    conn: int
    name: str
    args: tuple[Any, ...] = field(default_factory=tuple)


class FeatureMilter(Milter.Base):
    """See the module docstring."""

    events: ClassVar[list[Event]] = []
    _events_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self.id = Milter.uniqueID()
        self.client: tuple[str, int, Any] | None = None
        self.helo_name = ""
        self.msgno = 0
        self.aborted: list[str] = []
        self.connect_macros: dict[str, str | None] = {}
        self.offer: tuple[int, int] | None = None
        self._reset()

    def _reset(self) -> None:
        self.sender: str | None = None
        self.sender_params: tuple[str, ...] = ()
        self.rcpts: list[str] = []
        self.headers: list[tuple[str, str]] = []
        self.body_size = 0
        self.body_hash = hashlib.sha256()
        self.macros: dict[str, str | None] = {}

    def _event(self, name: str, *args: Any) -> None:
        with self._events_lock:
            self.events.append(Event(self.id, name, args))

    @classmethod
    def events_for(cls, helo: str) -> list[Event]:
        """Every event of the connections that said ``HELO helo``."""
        with cls._events_lock:
            conns = {e.conn for e in cls.events if e.name == "hello" and e.args == (helo,)}
            return [e for e in cls.events if e.conn in conns]

    def _macros(self) -> None:
        for name in MACROS:
            value = self.getsymval(name)
            if value is not None:
                self.macros[name] = value

    # ------------------------------------------------------------------ callbacks

    def negotiate(self, opts: list[int]) -> int:
        # What the application is shown: the MTA's offer, plus every "no reply"
        # bit (the framework emulates those the MTA lacks), as libmilter does.
        self.offer = (opts[0], opts[1])
        return super().negotiate(opts)

    @Milter.noreply
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        self.client = (hostname, family, hostaddr)
        self.connect_macros = {n: self.getsymval(n) for n in MACROS}
        self._event("connect", hostname, family, hostaddr)
        return Milter.CONTINUE

    @Milter.noreply
    def hello(self, hostname: str) -> int:
        self.helo_name = hostname
        self._event("hello", hostname)
        return Milter.CONTINUE

    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.sender = mailfrom
        self.sender_params = params
        self._macros()
        self._event("envfrom", mailfrom, *params)
        return Milter.CONTINUE

    def envrcpt(self, to: str, *params: str) -> int:
        local = _local(to)
        self._event("envrcpt", to, *params)
        if local == "reject":
            self.setreply("550", "5.7.1", "custom reject text")
            return Milter.REJECT
        if local == "reject-multi":
            self.setreply("550", "5.7.1", "custom first line", "custom second line",
                          "custom third line")
            return Milter.REJECT
        if local == "tempfail":
            return Milter.TEMPFAIL
        if local == "crash":
            raise RuntimeError("envrcpt crashed on purpose")
        if local == "tempfail-text":
            self.setreply("451", "4.7.1", "custom tempfail text")
            return Milter.TEMPFAIL
        self.rcpts.append(_strip(to))
        self._macros()
        return Milter.CONTINUE

    @Milter.noreply
    def header(self, name: str, value: str) -> int:
        if name.lower() == "x-crash":
            raise RuntimeError("header crashed on purpose")
        self.headers.append((name, value))
        self._event("header", name, value)
        return Milter.CONTINUE

    def eoh(self) -> int:
        return Milter.CONTINUE

    def body(self, chunk: bytes) -> int:
        self.body_size += len(chunk)
        self.body_hash.update(chunk)
        return Milter.CONTINUE

    def eom(self) -> int:
        self.msgno += 1
        try:
            return self._eom()
        finally:
            # After the end of the message, whatever happened (an MTA sends no
            # ABORT after EOM that a milter gets to see).
            self.aborted = []
            self._reset()

    def _eom(self) -> int:
        self._macros()
        locals_ = {_local(r) for r in self.rcpts}
        self._event("eom", self.msgno, tuple(self.rcpts))
        if "reject-eom" in locals_:
            self.setreply("550", "5.7.2", "eom reject")
            return Milter.REJECT
        if "crash-eom" in locals_:
            self.addheader("X-Half-Done", "must not be applied")
            raise RuntimeError("eom crashed on purpose")
        self._report()
        domain = self.rcpts[0].partition("@")[2] if self.rcpts else "example.test"
        if "addheader" in locals_:
            self.addheader("X-Feature-Top", "inserted at index 0", 0)
            self.addheader("X-Feature-Second", "inserted at index 1", 1)
            self.addheader("X-Feature-Folded", "first line\n\tsecond line")
            self.addheader("X-Feature-Utf8", "Grüße, 世界")
        if "body" in locals_:
            self.replacebody(REPLACED_BODY)
        if "bigbody" in locals_:
            half = len(BIG_BODY) // 2  # two calls: the parts are concatenated
            self.replacebody(BIG_BODY[:half])
            self.replacebody(BIG_BODY[half:])
        if "addrcpt" in locals_:
            self.addrcpt(f"<added@{domain}>")
            self.addrcpt(f"<added-par@{domain}>", "NOTIFY=NEVER")
        if "delrcpt" in locals_:
            self.delrcpt(f"<victim@{domain}>")
        if "chgfrom" in locals_:
            self.chgfrom(f"<changed-sender@{domain}>")
        if "delheader" in locals_:
            self.chgheader("X-Remove-Me", 1, "")
            self.chgheader("Subject", 1, "subject changed by the milter")
        return Milter.CONTINUE

    def _report(self) -> None:
        family = self.client[1] if self.client else -1
        family_name = socket.AddressFamily(family).name if family > 0 else str(family)
        hostaddr = self.client[2] if self.client else None
        macros = "; ".join(f"{k}={v}" for k, v in sorted(self.macros.items()))
        connect_macros = "; ".join(f"{k}={v}" for k, v in sorted(self.connect_macros.items())
                                   if v is not None)
        offer = f"{self.offer[0]:#x} {self.offer[1]:#x}" if self.offer else "none"
        report = {
            "X-Feature-Offer": offer,
            "X-Feature-Rcpts": ",".join(self.rcpts) or "none",
            "X-Feature-From": _strip(self.sender) if self.sender else "none",
            "X-Feature-Msgno": str(self.msgno),
            "X-Feature-Aborted": ",".join(self.aborted) or "none",
            "X-Feature-Client": f"{family_name} {hostaddr!r}",
            "X-Feature-Helo": self.helo_name or "none",
            "X-Feature-Macros": f"{macros} | connect: {connect_macros}",
            "X-Feature-Body": f"{self.body_size} {self.body_hash.hexdigest()}",
            "X-Feature-Headers": str(len(self.headers)),
        }
        for name in REPORT_HEADERS:
            self.addheader(name, report[name])

    def abort(self) -> int:
        self._event("abort", tuple(self.rcpts))
        self.aborted = list(self.rcpts)
        self._reset()
        return Milter.CONTINUE

    def close(self) -> int:
        self._event("close")
        return Milter.CONTINUE


def _strip(addr: str) -> str:
    addr = addr.strip()
    return addr[1:-1] if addr.startswith("<") and addr.endswith(">") else addr


def _local(addr: str) -> str:
    return _strip(addr).partition("@")[0].lower()


def parse_macros(value: str) -> tuple[dict[str, str], dict[str, str]]:
    """The ``X-Feature-Macros`` header as (message macros, connect macros)."""
    def parse(part: str) -> dict[str, str]:
        out = {}
        for item in part.split("; "):
            name, sep, val = item.partition("=")
            if sep:
                out[name.strip()] = val
        return out

    message, _, connect = " ".join(value.split()).partition(" | connect: ")
    return parse(message), parse(connect)
