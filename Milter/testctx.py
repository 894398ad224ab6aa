"""``TestCtx``: run a milter with no MTA and record what it did (pymilter 1.0.3+).

Unlike pymilter's, this ``TestCtx`` *is* a real connection context: it plays
the MTA by encoding each command as the packet an MTA would send and feeding
it to the same :class:`~Milter.context.Context` and protocol session that
serve real connections, then decodes the replies.  So negotiation, macro
lists, NR emulation, stage checks and reply texts behave exactly as over the
wire.  The recorded attributes are pymilter's (``_reply``, ``_addrcpt``,
``_delrcpt``, ``_body``, ``_bodyreplaced``, ``_headerschanged``, ``_sender``,
``_envfromchanged``, ``_msg``, ``_macros``, ``_symlist``, ``_protocol``).

pymilter quirks fixed here: ``default_opts`` is copied, not changed in
place; ``getsymval`` works outside a stage; ``quarantine`` records the reason;
``hostaddr`` has the shape a real MTA connection gives (``(ip, port)``), not
a bare string; ALL_OPTS does not switch every callback off; a milter that
skips CONNECT still gets HELO; SKIP from ``body`` goes on to ``eom``.
"""

from __future__ import annotations

import email
import email.message
import ipaddress
import time
from email.header import Header
from io import BytesIO
from typing import IO, Any

import Milter

from . import lowlevel
from .context import Context, to_bytes
from .protocol import commands as cmd
from .protocol import constants as C
from .protocol import replies as R
from .protocol.framing import FrameDecoder
from .protocol.session import Session

_VERDICT_RESULT = {
    C.SMFIR_CONTINUE: Milter.CONTINUE,
    C.SMFIR_ACCEPT: Milter.ACCEPT,
    C.SMFIR_REJECT: Milter.REJECT,
    C.SMFIR_TEMPFAIL: Milter.TEMPFAIL,
    C.SMFIR_DISCARD: Milter.DISCARD,
    C.SMFIR_SKIP: Milter.SKIP,
}


def _header_bytes(value: str | Header | bytes) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, Header):
        value = str(value)
    # Folded values keep LF + whitespace, as an MTA sends them (no CR).
    return value.replace("\r\n", "\n").encode("utf-8", "surrogateescape")


class TestCtx(Context):
    """A milter context that plays the MTA in unit tests."""

    default_opts = [Milter.CURR_ACTS, 0x1FFFFF, 0, 0]

    def __init__(self, logfile: str = "test/milter.log") -> None:
        callbacks = Milter.glue_callbacks()
        glue_negotiate = callbacks["negotiate"]

        def negotiate(ctx: TestCtx, opts: list[int]) -> int:
            ctx._negotiate_rc = glue_negotiate(ctx, opts)
            return ctx._negotiate_rc

        callbacks["negotiate"] = negotiate
        reg = lowlevel.Registration(name="pythonfilter", callbacks=dict(callbacks), registered=True)
        super().__init__(reg, self._capture, "test")
        self._wire: list[bytes] = []
        self._negotiate_rc = Milter.CONTINUE
        self._delrcpt: list[str] = []
        self._addrcpt: list[tuple[str, str | None]] = []
        self._macros: dict[str, str] = {}
        self._reply: tuple[Any, ...] | None = None
        self._symlist: list[set[bytes] | None] = [None] * 7
        self._body: BytesIO | None = None
        self._bodyreplaced = False
        self._headerschanged = False
        self._msg: email.message.Message | None = None
        self._sender: str | None = None
        self._envfromchanged = False
        self._quarantine: str | None = None
        self._opts = list(TestCtx.default_opts)
        self._protocol = 0
        self._stage: int | None = None
        self._activity = time.time()
        self._replies: list[R.Reply] = []

    # ------------------------------------------------------------- the wire

    def _capture(self, data: bytes) -> None:
        self._wire.append(data)

    def _exchange(self, packet: bytes) -> list[R.Reply]:
        """Send one MTA packet; return the decoded replies."""
        self._wire.clear()
        self.receive(packet)
        decoder = FrameDecoder()
        decoder.feed(b"".join(self._wire))
        replies: list[R.Reply] = []
        while (frame := decoder.next_frame()) is not None:
            replies.append(R.parse_reply(*frame))
        self._replies = replies
        return replies

    def _result(self, replies: list[R.Reply]) -> int:
        """The callback result the MTA saw; no reply (NR) counts as CONTINUE."""
        for reply in reversed(replies):
            if isinstance(reply, R.ReplyCode):
                return Milter.REJECT if reply.text[:1] == b"5" else Milter.TEMPFAIL
            if isinstance(reply, R.Verdict) and reply.code in _VERDICT_RESULT:
                return _VERDICT_RESULT[reply.code]
        return Milter.CONTINUE

    def _send_macros(self, stage_code: int, stage: int) -> None:
        self._stage = stage
        if self._macros:
            pairs = tuple((k.encode(), v.encode("utf-8", "surrogateescape"))
                          for k, v in self._macros.items())
            self._exchange(cmd.Macro(stage_code, pairs).encode())

    def _step(self, stage_code: int, stage: int, packet: bytes) -> int:
        self._send_macros(stage_code, stage)
        try:
            return self._result(self._exchange(packet))
        finally:
            self._stage = None

    # ------------------------------------------------------ context overrides

    def getsymval(self, name: str) -> str | None:
        stage = self._stage
        if stage is not None and stage >= 0:
            syms = self._symlist[stage]
            if syms is not None and name.encode() not in syms:
                return None
        return super().getsymval(name)

    def _setsymval(self, name: str, val: str) -> None:
        self._macros[name] = val

    def setreply(self, rcode: str, xcode: str | None = None, *msg: str | None) -> None:
        super().setreply(rcode, xcode, *msg)
        self._reply = (rcode, xcode, *msg)

    def setsymlist(self, stage: int, macros: str | bytes) -> None:
        if self._stage != -1:
            raise RuntimeError("setsymlist may only be called from negotiate")
        names = to_bytes(macros, "macro list").split(b" ")
        if len(names) > 5:
            raise ValueError("setsymlist limited to 5 macros by MTA")
        if self._symlist[stage] is not None:
            raise ValueError(f"setsymlist already called for stage: {stage}")
        if not names or names == [b""]:
            raise ValueError(f"setsymlist with empty list for stage: {stage}")
        self._symlist[stage] = set(names)
        super().setsymlist(stage, macros)

    def _in_eom(self, what: str) -> None:
        if self._body is None:
            raise OSError(f"{what} not called from eom()")

    def addheader(self, field: str, value: str, idx: int = -1) -> None:
        self._in_eom("addheader")
        super().addheader(field, value, idx)
        assert self._msg is not None
        self._msg[field] = value
        self._headerschanged = True

    def chgheader(self, field: str, idx: int, value: str | None) -> None:
        self._in_eom("chgheader")
        super().chgheader(field, idx, value)
        assert self._msg is not None
        if not value:
            del self._msg[field]
        else:
            self._msg[field] = value
        self._headerschanged = True

    def addrcpt(self, rcpt: str, params: str | None = None) -> None:
        self._in_eom("addrcpt")
        super().addrcpt(rcpt, params)
        self._addrcpt.append((rcpt, params))

    def delrcpt(self, rcpt: str) -> None:
        self._in_eom("delrcpt")
        super().delrcpt(rcpt)
        self._delrcpt.append(rcpt)

    def replacebody(self, chunk: str | bytes) -> None:
        self._in_eom("replacebody")
        super().replacebody(chunk)
        self._bodyreplaced = True

    def chgfrom(self, sender: str, params: str | None = None) -> None:
        self._in_eom("chgfrom")
        super().chgfrom(sender, params)
        self._envfromchanged = True
        self._sender = sender

    def quarantine(self, reason: str) -> None:
        self._in_eom("quarantine")
        super().quarantine(reason)
        self._quarantine = reason

    def progress(self) -> None:
        super().progress()
        self._activity = time.time()

    # ---------------------------------------------------------- MTA simulation

    def _negotiate(self) -> int:
        # A fresh protocol session for every simulated SMTP connection.
        self.session = Session(self.registration.max_data_size)
        self._closed = False
        self._deferred = None
        self._body = None
        self._bodyreplaced = False
        self._priv = None
        self._symlist = [None] * 7
        self._opts = list(TestCtx.default_opts)
        self._negotiate_rc = Milter.CONTINUE
        self._stage = -1
        try:
            replies = self._exchange(cmd.OptNeg(6, self._opts[0], self._opts[1]).encode())
        finally:
            self._stage = None
        rc = self._negotiate_rc
        agreement = self.session.agreement
        if not any(isinstance(r, R.OptNegReply) for r in replies) or agreement is None:
            return rc if rc not in (Milter.CONTINUE, Milter.ALL_OPTS) else Milter.TEMPFAIL
        self._opts = [agreement.actions, agreement.app_protocol, 0, 0]
        self._protocol = agreement.app_protocol
        return rc

    def _connect(self, host: str = "localhost", helo: str = "spamrelay",
                 ip: str = "1.2.3.4") -> int:
        rc = self._negotiate()
        if rc not in (Milter.CONTINUE, Milter.ALL_OPTS):
            return rc
        try:
            family = C.SMFIA_INET if ipaddress.ip_address(ip).version == 4 else C.SMFIA_INET6
        except ValueError:
            raise ValueError("TestCtx.connect: invalid ip address: " + ip) from None
        if not self._protocol & Milter.P_NOCONNECT:
            packet = cmd.Connect(to_bytes(host, "host"), family, 1234, ip).encode()
            rc = self._step(C.SMFIC_CONNECT, Milter.M_CONNECT, packet)
            if rc != Milter.CONTINUE:
                self._close()
                return rc
        else:
            self._send_macros(C.SMFIC_CONNECT, Milter.M_CONNECT)
            self._stage = None
        return self._helo(helo)

    def _helo(self, helo: str) -> int:
        if self._protocol & Milter.P_NOHELO:
            return Milter.CONTINUE
        rc = self._step(C.SMFIC_HELO, Milter.M_HELO, cmd.Helo(to_bytes(helo, "helo")).encode())
        if rc != Milter.CONTINUE:
            self._close()
        return rc

    def _envfrom(self, *s: str) -> int:
        self._sender = s[0]
        if self._protocol & Milter.P_NOMAIL:
            self._send_macros(C.SMFIC_MAIL, Milter.M_ENVFROM)
            self._stage = None
            return Milter.CONTINUE
        args = tuple(to_bytes(a, "envfrom argument") for a in s)
        return self._step(C.SMFIC_MAIL, Milter.M_ENVFROM, cmd.Mail(args).encode())

    def _envrcpt(self, *s: str) -> int:
        if self._protocol & Milter.P_NORCPT:
            return Milter.CONTINUE
        args = tuple(to_bytes(a, "envrcpt argument") for a in s)
        return self._step(C.SMFIC_RCPT, Milter.M_ENVRCPT, cmd.Rcpt(args).encode())

    def _data(self) -> int:
        if self._protocol & Milter.P_NODATA:
            return Milter.CONTINUE
        return self._step(C.SMFIC_DATA, Milter.M_DATA, cmd.Data().encode())

    def _header(self, fld: str, val: str | Header | bytes) -> int:
        if self._protocol & Milter.P_NOHDRS:
            return Milter.CONTINUE
        packet = cmd.Header(to_bytes(fld, "header name"), _header_bytes(val)).encode()
        return self._result(self._exchange(packet))

    def _eoh(self) -> int:
        if self._protocol & Milter.P_NOEOH:
            return Milter.CONTINUE
        return self._step(C.SMFIC_EOH, Milter.M_EOH, cmd.EndOfHeaders().encode())

    def _feed_body(self, bfp: IO[bytes]) -> int:
        if self._protocol & Milter.P_NOBODY:
            return Milter.CONTINUE
        while True:
            buf = bfp.read(8192)
            if not buf:
                return Milter.CONTINUE
            rc = self._result(self._exchange(cmd.Body(buf).encode()))
            if rc == Milter.SKIP:
                return Milter.CONTINUE
            if rc != Milter.CONTINUE:
                return rc

    def _eom(self) -> int:
        self._body = BytesIO()
        self._send_macros(C.SMFIC_BODYEOB, Milter.M_EOM)
        try:
            replies = self._exchange(cmd.EndOfMessage().encode())
        finally:
            self._stage = None
        for reply in replies:
            if isinstance(reply, R.ReplaceBody):
                self._body.write(reply.chunk)
        return self._result(replies)

    def _feedFile(self, fp: IO[bytes], sender: str = "spam@adv.com",
                  rcpt: str = "victim@lamb.com", *rcpts: str) -> int:
        """Feed a message (binary file) through envfrom … eom, as an MTA would;
        stop at the first result other than CONTINUE and return it."""
        self._body = None
        self._bodyreplaced = False
        self._headerschanged = False
        self._reply = None
        msg = email.message_from_binary_file(fp)
        self._msg = msg
        rc = self._envfrom(f"<{sender}>")
        if rc != Milter.CONTINUE:
            return rc
        for r in (rcpt, *rcpts):
            rc = self._envrcpt(f"<{r}>")
            if rc != Milter.CONTINUE:
                return rc
        rc = self._data()
        if rc != Milter.CONTINUE:
            return rc
        for name, value in msg.raw_items():
            rc = self._header(name, value)
            if rc != Milter.CONTINUE:
                return rc
        rc = self._eoh()
        if rc != Milter.CONTINUE:
            return rc
        header, _sep, body = msg.as_bytes().partition(b"\n\n")
        rc = self._feed_body(BytesIO(body))
        if rc != Milter.CONTINUE:
            return rc
        rc = self._eom()
        if self._bodyreplaced:
            body = self._body.getvalue() if self._body is not None else b""
        self._body = BytesIO()
        self._body.write(header)
        self._body.write(b"\n\n")
        self._body.write(body)
        return rc

    def _feedMsg(self, fname: str, sender: str = "spam@adv.com", *rcpts: str) -> int:
        with open("test/" + fname, "rb") as fp:
            return self._feedFile(fp, sender, *rcpts)

    def _abort(self) -> None:
        """What the MTA does on RSET: ABORT, then the connection ends."""
        self._exchange(cmd.Abort().encode())
        self._close()

    def _close(self) -> None:
        if not self.closed:
            self._exchange(cmd.Quit().encode())
            if not self.closed:  # QUIT was ignored (before any message): EOF ends it
                self.connection_lost()
