"""``TestBase``: pymilter's (deprecated) test mixin, ``class T(TestBase, MyMilter)``.

It overrides the action methods of the milter itself and records what they
did; the callbacks are called directly.  Negotiation uses the same offer and
arithmetic as a real session.  Importing this module sets ``Milter.NOREPLY``
to ``CONTINUE``, as pymilter's does, so ``@noreply`` methods look like
``CONTINUE`` to the harness.

pymilter quirks fixed: ``addrcpt`` takes ``params`` (recorded recipients
stay plain strings); ``connect`` passes ``AF_INET``/``AF_INET6`` with an
``(ip, port)`` tuple instead of family 1; ``setsymlist`` works;
``quarantine`` records the reason; a missing log directory logs to stdout.
"""

from __future__ import annotations

import email
import email.message
import ipaddress
import socket
import sys
from email.header import Header
from io import BytesIO
from typing import IO, Any, TextIO

import Milter

from .context import to_bytes
from .protocol import constants as C
from .protocol.errors import NegotiationRefused
from .protocol.negotiation import Offer, settle

Milter.NOREPLY = Milter.CONTINUE  # type: ignore[misc]


class TestBase:
    """Mix in before the milter class: ``class T(TestBase, MyMilter)``."""

    _actions: int
    _protocol: int

    def __init__(self, logfile: str = "test/milter.log") -> None:
        self._protocol = 0
        self._actions = Milter.CURR_ACTS
        self.logfp: TextIO | None
        try:
            self.logfp = open(logfile, "a")  # noqa: SIM115 - closed in _close()
        except FileNotFoundError:
            self.logfp = None
        self._sender: str | None = None
        self._delrcpt: list[str] = []
        self._addrcpt: list[str] = []
        self._macros: dict[str, str] = {}
        self._body: BytesIO | None = None
        self._bodyreplaced = False
        self._headerschanged = False
        self._envfromchanged = False
        self._reply: tuple[Any, ...] | None = None
        self._msg: email.message.Message | None = None
        self._stage: int | None = None
        self._symlist: list[set[bytes] | None] = [None] * 7
        self._quarantine: str | None = None

    def _close(self) -> None:
        if self.logfp:
            self.logfp.close()
            self.logfp = None

    def log(self, *msg: Any) -> None:
        print(*msg, file=self.logfp or sys.stdout)

    def setsymval(self, name: str, val: str) -> None:
        self._macros[name] = val

    def getsymval(self, name: str) -> str | None:
        stage = self._stage
        if stage is not None and stage >= 0:
            syms = self._symlist[stage]
            if syms is not None and name.encode() not in syms:
                return None
        return self._macros.get(name)

    def _need_eom(self, what: str) -> None:
        if self._body is None:
            raise OSError(f"{what} not called from eom()")

    def replacebody(self, chunk: str | bytes) -> None:
        self._need_eom("replacebody")
        assert self._body is not None
        self._body.write(to_bytes(chunk, "body"))
        self._bodyreplaced = True

    def chgfrom(self, sender: str, params: str | None = None) -> None:
        self._need_eom("chgfrom")
        self.log(f"chgfrom: sender={sender}")
        self._envfromchanged = True
        self._sender = sender

    def quarantine(self, reason: str) -> None:
        self._need_eom("quarantine")
        self._quarantine = reason

    def progress(self) -> None:
        pass

    def chgheader(self, field: str, idx: int, value: str | None) -> None:
        self._need_eom("chgheader")
        self.log(f"chgheader: {field}[{idx}]={value}")
        assert self._msg is not None
        if not value:
            del self._msg[field]
        else:
            self._msg[field] = value
        self._headerschanged = True

    def addheader(self, field: str, value: str, idx: int = -1) -> None:
        self._need_eom("addheader")
        self.log(f"addheader: {field}={value}")
        assert self._msg is not None
        self._msg[field] = value
        self._headerschanged = True

    def delrcpt(self, rcpt: str) -> None:
        self._need_eom("delrcpt")
        self._delrcpt.append(rcpt)

    def addrcpt(self, rcpt: str, params: str | None = None) -> None:
        self._need_eom("addrcpt")
        self._addrcpt.append(rcpt)

    def setreply(self, rcode: str, xcode: str | None = None, *msg: str | None) -> None:
        self._reply = (rcode, xcode, *msg)

    def setsymlist(self, stage: int, *macros: str | bytes) -> None:
        if not self._actions & Milter.SETSYMLIST:
            raise Milter.DisabledAction("SETSYMLIST")
        if self._stage != -1:
            raise RuntimeError("setsymlist may only be called from negotiate")
        names: list[bytes] = []
        for m in macros:
            names += to_bytes(m, "macro list").split(b" ")
        if len(names) > 5:
            raise ValueError("setsymlist limited to 5 macros by MTA")
        if self._symlist[stage] is not None:
            raise ValueError(f"setsymlist already called for stage: {stage}")
        self._symlist[stage] = set(names)

    def _tb_call(self, stage: int | None, fn: Any, *args: Any) -> int:
        self._stage = stage
        try:
            return fn(*args)  # type: ignore[no-any-return]
        finally:
            self._stage = None

    def feedFile(self, fp: IO[bytes], sender: str = "spam@adv.com",
                 rcpt: str = "victim@lamb.com", *rcpts: str) -> int:
        """envfrom, envrcpt for each recipient, data, header for each header,
        eoh, body blocks and eom; stops at the first result other than
        CONTINUE.  Calls close() after the message, as pymilter's does."""
        m: Any = self
        self._body = None
        self._bodyreplaced = False
        self._headerschanged = False
        self._reply = None
        self._sender = f"<{sender}>"
        msg = email.message_from_binary_file(fp)
        rc = self._tb_call(Milter.M_ENVFROM, m.envfrom, self._sender)
        if rc != Milter.CONTINUE:
            return rc
        for r in (rcpt, *rcpts):
            rc = self._tb_call(Milter.M_ENVRCPT, m.envrcpt, f"<{r}>")
            if rc != Milter.CONTINUE:
                return rc
        rc = self._tb_call(Milter.M_DATA, m.data)
        if rc != Milter.CONTINUE:
            return rc
        for name, value in msg.raw_items():
            raw = str(value) if isinstance(value, Header) else value
            data = raw.replace("\r\n", "\n").encode("utf-8", "surrogateescape")
            rc = self._tb_call(None, m.header_bytes, name, data)
            if rc != Milter.CONTINUE:
                return rc
        rc = self._tb_call(Milter.M_EOH, m.eoh)
        if rc != Milter.CONTINUE:
            return rc
        header, _sep, body = msg.as_bytes().partition(b"\n\n")
        bfp = BytesIO(body)
        while True:
            buf = bfp.read(8192)
            if not buf:
                break
            rc = self._tb_call(None, m.body, buf)
            if rc == Milter.SKIP:
                break
            if rc != Milter.CONTINUE:
                return rc
        self._msg = msg
        self._body = BytesIO()
        rc = self._tb_call(Milter.M_EOM, m.eom)
        if self._bodyreplaced:
            body = self._body.getvalue()
        self._body = BytesIO()
        self._body.write(header)
        self._body.write(b"\n\n")
        self._body.write(body)
        m.close()
        self._close()
        return rc

    def feedMsg(self, fname: str, sender: str = "spam@adv.com", *rcpts: str) -> int:
        with open("test/" + fname, "rb") as fp:
            return self.feedFile(fp, sender, *rcpts)

    def connect(self, host: str = "localhost", helo: str = "spamrelay",  # type: ignore[override]
                ip: str = "1.2.3.4") -> int:
        """Negotiate, then call connect and (if it continues) hello."""
        m: Any = self
        self._body = None
        self._bodyreplaced = False
        m._setctx(None)
        offer = Offer(C.SMFI_PROT_VERSION, C.SMFI_CURR_ACTS, C.SMFI_CURR_PROT)
        opts = offer.app_options()
        rc = self._tb_call(-1, m.negotiate, opts)
        try:
            settle(offer, rc, opts)
        except NegotiationRefused:
            return Milter.TEMPFAIL
        if ipaddress.ip_address(ip).version == 6:
            family, hostaddr = socket.AF_INET6, (ip, 1234, 0, 0)
        else:
            family, hostaddr = socket.AF_INET, (ip, 1234)  # type: ignore[assignment]
        rc = self._tb_call(Milter.M_CONNECT, super().connect, host, family, hostaddr)  # type: ignore[misc]
        if rc != Milter.CONTINUE:
            m.close()
            return rc
        rc = self._tb_call(Milter.M_HELO, m.hello, helo)
        if rc != Milter.CONTINUE:
            m.close()
        return rc
