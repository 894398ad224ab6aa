"""One MTA connection, as pymilter's ``milter.Context`` presents it.

:class:`Context` drives a :class:`~Milter.protocol.Session`: it turns each
command into a call of the registered low-level callback (pymilter's argument
types), applies the exception policy, turns the result into the reply bytes,
and offers the context methods (``getsymval``, ``setreply``, ``addheader`` …)
that ``Milter.Base`` forwards to.  It writes through a ``send`` callable, so
the same code runs behind a socket (``server.py``) and in ``TestCtx``.

End-of-message output is collected and written at the final reply: edits in
call order, then the replacement body (read back from a spool, so a large
body need not sit in memory) as one contiguous run of REPLBODY packets, as
Postfix requires, then the verdict.
"""

from __future__ import annotations

import logging
import socket
import tempfile
from collections.abc import Callable
from time import perf_counter
from typing import IO, Any, Final

from . import registration as L
from .observer import NullObserver
from .protocol import commands as cmd
from .protocol import constants as C
from .protocol import replies as R
from .protocol.errors import NegotiationRefused, PeerError, UsageError, shown
from .protocol.negotiation import Offer, settle
from .protocol.replytext import build_reply
from .protocol.session import Session, State

log = logging.getLogger("Milter")

_VALID: Final = frozenset(
    (L.CONTINUE, L.REJECT, L.DISCARD, L.ACCEPT, L.TEMPFAIL, L.NOREPLY, L.SKIP)
)
_STAGE_NAMES: Final = {
    State.CONN: "connect", State.HELO: "helo", State.MAIL: "envfrom", State.RCPT: "envrcpt",
    State.DATA: "data", State.HDRS: "header", State.EOHS: "eoh", State.BODY: "body",
    State.ENDM: "eom", State.UNKN: "unknown",
}
# NO bits for callbacks that are not registered (libmilter mi_listener).
_NO_BIT: Final = {
    "connect": C.SMFIP_NOCONNECT, "helo": C.SMFIP_NOHELO, "envfrom": C.SMFIP_NOMAIL,
    "envrcpt": C.SMFIP_NORCPT, "body": C.SMFIP_NOBODY, "header": C.SMFIP_NOHDRS,
    "eoh": C.SMFIP_NOEOH, "unknown": C.SMFIP_NOUNKNOWN, "data": C.SMFIP_NODATA,
}
_FAMILY: Final = {
    C.SMFIA_INET: socket.AF_INET,
    C.SMFIA_INET6: socket.AF_INET6,
    C.SMFIA_UNIX: socket.AF_UNIX,
    C.SMFIA_UNKNOWN: 0,
}
BODY_SPOOL_MEMORY: Final = 1024 * 1024  # replacement body kept in memory up to this size
_WRITE_BATCH: Final = 256 * 1024


def to_bytes(value: str | bytes, what: str) -> bytes:
    """pymilter's argument rule: ``str`` is UTF-8 encoded (surrogates from
    8-bit input round-trip), bytes pass, and an embedded NUL is refused."""
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogateescape")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    else:
        raise TypeError(f"{what} must be str or bytes, not {type(value).__name__}")
    if b"\0" in data:
        raise ValueError(f"{what} contains a NUL character")
    return data


def to_str(value: bytes) -> str:
    """Wire bytes for the API: UTF-8, with undecodable bytes kept as surrogates.

    pymilter decodes hostnames, HELO names, header names and macros strictly,
    so an 8-bit HELO raised inside the C layer and tempfailed the session; we
    use ``surrogateescape`` everywhere and pass such input to the callback."""
    return value.decode("utf-8", "surrogateescape")


def _check_header_name(name: bytes) -> None:
    if not name or any(b <= 32 or b == 58 or b == 127 for b in name):
        raise L.error(f"invalid header name {shown(name)}")


def _check_header_value(value: bytes) -> None:
    # Folding is "\n" plus whitespace; any other line break would let the value
    # start a header of its own in the MTA's queue file.
    if b"\r" in value:
        raise L.error("header value contains CR")
    start = value.find(b"\n")
    while start >= 0:
        if value[start + 1 : start + 2] not in (b" ", b"\t"):
            raise L.error("header value has a line break not followed by whitespace")
        start = value.find(b"\n", start + 1)


def _check_envelope(addr: bytes, what: str) -> None:
    # An SMTP path has no escape for control characters: CR or LF would end
    # the MTA's envelope line, ESC reaches Return-Path (issue 13).
    if any(b < 32 or b == 127 for b in addr):
        raise L.error(f"cannot {what}: control character in address {shown(addr)}")


class Context:
    """Per-connection context (pymilter ``milter.Context``)."""

    def __init__(
        self,
        registration: L.Registration,
        send: Callable[[bytes], Any],
        conn_id: str = "-",
    ) -> None:
        self.session = Session(registration.max_data_size)
        self.registration = registration
        self._callbacks = registration.callbacks
        # Callback timing costs two clock reads per callback: skipped when
        # nothing observes it (the pymilter default).
        observer = registration.observer
        self._observe: Callable[[str, float], None] | None = (
            None if isinstance(observer, NullObserver) else observer.callback)
        self.id = conn_id
        # Every line this context logs names its connection (record.connid).
        self.log = logging.LoggerAdapter(log, {"connid": conn_id})
        self._send = send
        self._priv: Any = None
        self._symlists: dict[int, bytes] | None = None
        self._eom_out: bytearray | None = None
        self._body_spool: IO[bytes] | None = None
        self._closed = False
        self._deferred: tuple[int, bool] | None = None  # (result, arose in a transaction)
        L.count_context(True)

    # ------------------------------------------------------------------ driving

    @property
    def closed(self) -> bool:
        return self._closed

    def receive(self, data: bytes) -> bool:
        """Process what the MTA sent; ``False`` once the session is over."""
        session = self.session
        session.receive_data(data)
        handlers = _HANDLERS
        while not session.ended:
            try:
                event = session.next_event()
            except PeerError as exc:
                self.log.warning("protocol error from MTA, closing session: %s", exc)
                self.connection_lost()
                return False
            if session.dropped:
                if log.isEnabledFor(logging.DEBUG):
                    self.log.debug("ignored out-of-order commands %s",
                                   ", ".join(repr(chr(c)) for c in session.dropped))
                session.dropped.clear()
            if event is None:
                break
            handlers[type(event)](self, event)
        if session.ended:
            self.connection_lost()
            return False
        return True

    @property
    def idle(self) -> bool:
        """No transaction is open: the connection may be closed between messages."""
        return not self.session.in_transaction

    def end_of_input(self) -> None:
        """The MTA closed its side: a packet it cut short is logged, then the
        session ends as :meth:`connection_lost` ends it."""
        try:
            self.session.receive_eof()
        except PeerError as exc:
            self.log.warning("MTA closed the connection mid-packet: %s", exc)
        self.connection_lost()

    def connection_lost(self, reason: BaseException | None = None) -> None:
        """End of the session (EOF, error, timeout): abort an open transaction,
        then run close exactly once."""
        if self._closed:
            return
        if reason is not None:
            self.log.info("MTA connection ended: %s", reason)
        if self.session.in_transaction:
            self._call("abort")
        self._finish()

    def _finish(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.session.ended = True
        self._discard_eom_output()
        self._call("close")
        L.count_context(False)

    # ------------------------------------------------------------ callbacks

    def _call(self, name: str, *args: Any) -> tuple[int, bool]:
        """Run a callback; returns ``(result, failed)``.  Exceptions and
        results that are not a known ``int`` go through the exception policy."""
        fn = self._callbacks.get(name)
        if fn is None:
            return L.CONTINUE, False
        if self._deferred is not None and name not in ("abort", "close"):
            # A failure is waiting for the next reply the MTA reads: the
            # callbacks in between never run, so none of them (eom's ACCEPT,
            # say) can answer over it.  libmilter sends nothing at all here.
            return L.CONTINUE, False
        observe = self._observe
        started = perf_counter() if observe is not None else 0.0
        try:
            rc = fn(self, *args)
        except Exception:
            self.log.exception("untrapped exception in %s callback", name)
            return self._exception_policy(), True
        finally:
            if observe is not None:
                observe(name, perf_counter() - started)
        if name in ("abort", "close"):
            return L.CONTINUE, False
        if not isinstance(rc, int) or (
                rc not in _VALID and not (name == "negotiate" and rc == L.ALL_OPTS)):
            self.log.error("the %s callback returned %r, not a milter result code", name, rc)
            return self._exception_policy(), True
        return int(rc), False

    def _exception_policy(self) -> int:
        policy = self.registration.exception_policy
        text = f"pymilter: untrapped exception in {self.registration.name[:40]}".encode()
        if policy == L.TEMPFAIL:
            self.session.set_reply(build_reply(b"451", b"4.3.0", [text]))
        elif policy == L.REJECT:
            self.session.set_reply(build_reply(b"554", b"5.3.0", [text]))
        return policy

    def _answer(self, rc: int, failed: bool) -> None:
        """Send the reply for the command being handled."""
        session = self.session
        if rc == 0 and self._deferred is None:  # CONTINUE: the common case
            data = session.respond(rc)
            if data:
                self._send(data)
            return
        if session.effective_result(rc) == L.NOREPLY and rc not in (L.NOREPLY, L.CONTINUE):
            state = session.awaiting
            stage = _STAGE_NAMES.get(state, "?") if state is not None else "?"
            if not failed:
                self.log.warning("milter claimed not to reply at %s but returned %d", stage, rc)
            elif session.expects_reply():
                # NR is emulated here, so the MTA reads a reply: send the failure.
                self._send_out(session.respond(rc, honour_nr=False))
                return
            else:
                # The MTA reads no reply here: answer the failure at the next
                # command it waits on instead of losing it (libmilter loses it).
                self._deferred = (rc, session.in_transaction)
                self.log.warning("%s failed where the MTA reads no reply; failure deferred", stage)
        elif self._deferred is not None and rc in (L.CONTINUE, L.NOREPLY) \
                and session.expects_reply():
            rc = self._deferred[0]
            self._deferred = None
            self._send_out(session.respond(rc, honour_nr=False))
            return
        self._send_out(session.respond(rc))

    def _send_out(self, data: bytes) -> None:
        if data:
            self._send(data)

    # -------------------------------------------------------------- handlers

    def _on_optneg(self, ev: cmd.OptNeg) -> None:
        offer = Offer.from_command(ev)
        opts = offer.app_options()
        reg = self.registration
        unregistered = 0
        for name, bit in _NO_BIT.items():
            if reg.callbacks.get(name) is None:
                unregistered |= bit
        self._symlists = {}
        try:
            if reg.callbacks.get("negotiate") is None:
                rc = L.CONTINUE
                opts[0] = reg.flags & offer.actions
                opts[1] = unregistered
            else:
                rc, failed = self._call("negotiate", opts)
                if failed:
                    raise NegotiationRefused("negotiate callback failed")
            symlists = tuple(sorted(self._symlists.items()))
            agreement = settle(offer, rc, opts, symlists, unregistered)
        except (NegotiationRefused, ValueError, TypeError) as exc:
            self.log.error("option negotiation failed, closing session: %s", exc)
            self.session.refuse()
            return
        finally:
            self._symlists = None
        self._send_out(self.session.negotiated(agreement))

    def _on_connect(self, ev: cmd.Connect) -> None:
        family = _FAMILY[ev.family]
        hostaddr: Any
        if ev.family == C.SMFIA_INET:
            hostaddr = (ev.address, ev.port)
        elif ev.family == C.SMFIA_INET6:
            hostaddr = (ev.address, ev.port, 0, 0)
        elif ev.family == C.SMFIA_UNIX:
            hostaddr = ev.address
        else:
            hostaddr = None
        self._answer(*self._call("connect", to_str(ev.hostname), family, hostaddr))

    def _on_helo(self, ev: cmd.Helo) -> None:
        self._answer(*self._call("helo", to_str(ev.name)))

    def _on_mail(self, ev: cmd.Mail) -> None:
        self._answer(*self._call("envfrom", *ev.args))

    def _on_rcpt(self, ev: cmd.Rcpt) -> None:
        self._answer(*self._call("envrcpt", *ev.args))

    def _on_data(self, ev: cmd.Data) -> None:
        self._answer(*self._call("data"))

    def _on_header(self, ev: cmd.Header) -> None:
        self._answer(*self._call("header", to_str(ev.name), ev.value))

    def _on_eoh(self, ev: cmd.EndOfHeaders) -> None:
        self._answer(*self._call("eoh"))

    def _on_body(self, ev: cmd.Body) -> None:
        self._answer(*self._call("body", ev.chunk))

    def _on_unknown(self, ev: cmd.Unknown) -> None:
        self._answer(*self._call("unknown", to_str(ev.line)))

    def _on_eom(self, ev: cmd.EndOfMessage) -> None:
        self._eom_out = bytearray()
        rc, failed = L.CONTINUE, False
        if ev.chunk:
            # libmilter: data on BODYEOB is a last body chunk; eom runs only if
            # body() said CONTINUE, and the MTA gets exactly one reply.
            rc, failed = self._call("body", ev.chunk)
        if rc == L.CONTINUE:
            rc, failed = self._call("eom")
        if failed:
            self._discard_eom_output()  # never half an edit set
        if self._deferred is not None and rc in (L.CONTINUE, L.NOREPLY):
            rc = self._deferred[0]
            self._discard_eom_output()
        self._deferred = None
        self._flush_eom(self.session.respond(rc))

    def _on_abort(self, ev: cmd.Abort) -> None:
        if self._deferred is not None and self._deferred[1]:
            self._deferred = None
        self._call("abort")

    def _on_quit(self, ev: cmd.Quit) -> None:
        self._finish()

    def _on_quit_nc(self, ev: cmd.QuitNewConnection) -> None:
        # Close this SMTP session's object; a new CONNECT may follow (§6.1).
        self._call("close")
        self._priv = None  # the next CONNECT gets a fresh factory() object
        self._deferred = None

    # -------------------------------------------------------- EOM output

    def _flush_eom(self, final: bytes) -> None:
        out = self._eom_out if self._eom_out is not None else bytearray()
        spool = self._body_spool
        self._eom_out = None
        self._body_spool = None
        if spool is not None:
            spool.seek(0)
            chunk = spool.read(C.MILTER_CHUNK_SIZE)
            while True:  # an empty replacement is one empty REPLBODY packet
                out += R.ReplaceBody(chunk).encode()
                if len(out) >= _WRITE_BATCH:
                    self._send(bytes(out))
                    out.clear()
                chunk = spool.read(C.MILTER_CHUNK_SIZE)
                if not chunk:
                    break
            spool.close()
        out += final
        self._send(bytes(out))

    def _discard_eom_output(self) -> None:
        self._eom_out = None
        if self._body_spool is not None:
            self._body_spool.close()
            self._body_spool = None

    def _modify(self, mod: R.Modification, failure: str) -> None:
        try:
            packet = self.session.modification(mod)
        except UsageError as exc:
            raise L.error(f"{failure}: {exc}") from None
        if self._eom_out is None:  # pragma: no cover - session checks in_eom
            raise L.error(f"{failure}: not at end of message")
        self._eom_out += packet

    # ------------------------------------------------- pymilter context API

    @property
    def negotiated_actions(self) -> int:
        """The actions of this connection's agreement (none without one: a
        session the MTA began without OPTNEG may not edit anything)."""
        agreement = self.session.agreement
        return 0 if agreement is None else agreement.actions

    def getpriv(self) -> Any:
        return self._priv

    def setpriv(self, priv: Any) -> Any:
        previous, self._priv = self._priv, priv
        return previous

    def getsymval(self, name: str) -> str | None:
        value = self.session.macros.get(to_bytes(name, "macro name"))
        return None if value is None else to_str(value)

    def setreply(self, rcode: str, xcode: str | None = None, *msg: str | None) -> None:
        lines = [to_bytes(m, "reply text") for m in msg if m is not None]
        try:
            text = build_reply(
                to_bytes(rcode, "reply code"),
                None if xcode is None else to_bytes(xcode, "extended code"),
                lines,
            )
        except UsageError as exc:
            raise L.error(f"cannot set reply: {exc}") from None
        self.session.set_reply(text)

    def setsymlist(self, stage: int, macros: str | bytes) -> None:
        if self._symlists is None:
            raise L.error("cannot set macro list: only allowed while negotiating")
        if stage not in range(C.SMFIM_CONNECT, C.SMFIM_EOH + 1):
            raise L.error(f"cannot set macro list: bad stage {stage}")
        if stage in self._symlists:
            raise L.error(f"cannot set macro list: stage {stage} already has one")
        self._symlists[stage] = to_bytes(macros, "macro list")

    def addheader(self, field: str, value: str, idx: int = -1) -> None:
        name, data = to_bytes(field, "header name"), to_bytes(value, "header value")
        _check_header_name(name)
        _check_header_value(data)
        mod: R.Modification
        mod = R.AddHeader(name, data) if idx < 0 else R.InsertHeader(idx, name, data)
        self._modify(mod, "cannot add header")

    def chgheader(self, field: str, idx: int, value: str | None) -> None:
        name = to_bytes(field, "header name")
        data = b"" if value is None else to_bytes(value, "header value")
        _check_header_name(name)
        _check_header_value(data)
        if idx < 0:
            raise L.error("cannot change header: negative index")
        self._modify(R.ChangeHeader(idx, name, data), "cannot change header")

    def addrcpt(self, rcpt: str, params: str | None = None) -> None:
        addr = to_bytes(rcpt, "recipient")
        if not addr:
            raise L.error("cannot add recipient: empty address")
        _check_envelope(addr, "add recipient")
        if params is None:
            self._modify(R.AddRcpt(addr), "cannot add recipient")
        else:
            self._modify(R.AddRcptPar(addr, to_bytes(params, "ESMTP parameters")),
                         "cannot add recipient")

    def delrcpt(self, rcpt: str) -> None:
        addr = to_bytes(rcpt, "recipient")
        if not addr:
            raise L.error("cannot delete recipient: empty address")
        self._modify(R.DelRcpt(addr), "cannot delete recipient")

    def chgfrom(self, sender: str, params: str | None = None) -> None:
        addr = to_bytes(sender, "sender")
        if not addr:
            raise L.error("cannot change sender: empty address")
        _check_envelope(addr, "change sender")
        args = None if params is None else to_bytes(params, "ESMTP parameters")
        self._modify(R.ChangeFrom(addr, args), "cannot change sender")

    def quarantine(self, reason: str) -> None:
        text = to_bytes(reason, "quarantine reason")
        if not text:
            raise L.error("cannot quarantine message: empty reason")
        self._modify(R.Quarantine(text), "cannot quarantine message")

    def replacebody(self, body: str | bytes) -> None:
        if isinstance(body, str):
            data = body.encode("utf-8", "surrogateescape")
        elif isinstance(body, (bytes, bytearray, memoryview)):
            data = bytes(body)
        else:
            raise TypeError(f"body must be str or bytes, not {type(body).__name__}")
        try:
            self.session.check_action(C.SMFIF_CHGBODY)
        except UsageError as exc:
            raise L.error(f"cannot replace message body: {exc}") from None
        if self._body_spool is None:
            # Closed in _flush_eom / _discard_eom_output.
            self._body_spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115
                max_size=BODY_SPOOL_MEMORY)
        self._body_spool.write(data)

    def progress(self) -> None:
        self._send_out(self.session.progress())


# Command type -> handler, built once (not per connection).
_HANDLERS: Final[dict[type, Callable[[Context, Any], None]]] = {
    cmd.OptNeg: Context._on_optneg,
    cmd.Connect: Context._on_connect,
    cmd.Helo: Context._on_helo,
    cmd.Mail: Context._on_mail,
    cmd.Rcpt: Context._on_rcpt,
    cmd.Data: Context._on_data,
    cmd.Header: Context._on_header,
    cmd.EndOfHeaders: Context._on_eoh,
    cmd.Body: Context._on_body,
    cmd.EndOfMessage: Context._on_eom,
    cmd.Abort: Context._on_abort,
    cmd.Quit: Context._on_quit,
    cmd.QuitNewConnection: Context._on_quit_nc,
    cmd.Unknown: Context._on_unknown,
}
