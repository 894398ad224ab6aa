"""The milter session state machine, as libmilter's ``mi_engine`` runs it
(PROTOCOL.md §6.2), without any I/O.

Use it like h11: ``receive_data(bytes)``, then ``next_event()`` until it
returns ``None``; after each event that expects an answer, ``respond(result)``
gives the bytes to send (possibly ``b""``).  Edits at end of message go
through ``modification()``.  Transitions are data (``NEXT``); a command that
is not allowed is handled as libmilter does: abort an open transaction, retry
from HELO, otherwise drop the command without a reply.
"""

from __future__ import annotations

import functools
from collections import deque
from enum import IntEnum
from typing import Final

from . import commands as cmd
from . import constants as C
from . import replies as R
from .commands import PARSERS
from .errors import ActionNotAllowed, MalformedPacket, UsageError
from .framing import FrameDecoder
from .macros import (
    SLOT_CONNECT,
    SLOT_HELO,
    SLOT_MAIL,
    SLOT_RCPT,
    MacroStore,
)
from .negotiation import Agreement, Offer


class State(IntEnum):
    INIT = 0
    OPTS = 1
    CONN = 2
    HELO = 3
    MAIL = 4
    RCPT = 5
    DATA = 6
    HDRS = 7
    EOHS = 8
    BODY = 9
    ENDM = 10
    QUIT = 11
    ABRT = 12
    UNKN = 13
    Q_NC = 14


S = State


def _mask(*states: State) -> int:
    bits = 0
    for s in states:
        bits |= 1 << s
    return bits


# Allowed next states (engine.c next_states[]).
NEXT: Final[dict[State, int]] = {
    S.INIT: _mask(S.OPTS),
    S.OPTS: _mask(S.CONN, S.UNKN),
    S.CONN: _mask(S.HELO, S.MAIL, S.UNKN),
    S.HELO: _mask(S.HELO, S.MAIL, S.UNKN),
    S.MAIL: _mask(S.RCPT, S.ABRT, S.UNKN),
    S.RCPT: _mask(S.HDRS, S.EOHS, S.DATA, S.BODY, S.ENDM, S.RCPT, S.ABRT, S.UNKN),
    S.DATA: _mask(S.EOHS, S.HDRS, S.ABRT),
    S.HDRS: _mask(S.EOHS, S.HDRS, S.ABRT),
    S.EOHS: _mask(S.BODY, S.ENDM, S.ABRT),
    S.BODY: _mask(S.ENDM, S.BODY, S.ABRT),
    S.ENDM: _mask(S.QUIT, S.MAIL, S.UNKN, S.Q_NC),
    S.QUIT: 0,
    S.ABRT: 0,
    S.UNKN: _mask(S.HELO, S.MAIL, S.RCPT, S.ABRT, S.DATA, S.BODY, S.UNKN, S.QUIT, S.Q_NC),
    S.Q_NC: _mask(S.CONN, S.UNKN),
}

# The state each command moves to; MACRO moves nowhere.
COMMAND_STATE: Final[dict[int, State]] = {
    C.SMFIC_ABORT: S.ABRT,
    C.SMFIC_BODY: S.BODY,
    C.SMFIC_CONNECT: S.CONN,
    C.SMFIC_BODYEOB: S.ENDM,
    C.SMFIC_HELO: S.HELO,
    C.SMFIC_HEADER: S.HDRS,
    C.SMFIC_MAIL: S.MAIL,
    C.SMFIC_OPTNEG: S.OPTS,
    C.SMFIC_EOH: S.EOHS,
    C.SMFIC_QUIT: S.QUIT,
    C.SMFIC_DATA: S.DATA,
    C.SMFIC_RCPT: S.RCPT,
    C.SMFIC_UNKNOWN: S.UNKN,
    C.SMFIC_QUIT_NC: S.Q_NC,
}

# A stage whose "don't send" bit the application negotiated may be jumped over.
SKIP_BIT: Final[dict[State, int]] = {
    S.CONN: C.SMFIP_NOCONNECT,
    S.HELO: C.SMFIP_NOHELO,
    S.MAIL: C.SMFIP_NOMAIL,
    S.RCPT: C.SMFIP_NORCPT,
    S.DATA: C.SMFIP_NODATA,
    S.HDRS: C.SMFIP_NOHDRS,
    S.EOHS: C.SMFIP_NOEOH,
    S.BODY: C.SMFIP_NOBODY,
    S.UNKN: C.SMFIP_NOUNKNOWN,
}

# engine.c get_nr_bit().
NR_BIT: Final[dict[State, int]] = {
    S.CONN: C.SMFIP_NR_CONN,
    S.HELO: C.SMFIP_NR_HELO,
    S.MAIL: C.SMFIP_NR_MAIL,
    S.RCPT: C.SMFIP_NR_RCPT,
    S.DATA: C.SMFIP_NR_DATA,
    S.UNKN: C.SMFIP_NR_UNKN,
    S.HDRS: C.SMFIP_NR_HDR,
    S.EOHS: C.SMFIP_NR_EOH,
    S.BODY: C.SMFIP_NR_BODY,
}

# Commands after which a REJECT/TEMPFAIL/DISCARD keeps the state (CT_IGNO).
KEEP_STATE_ON_ERROR: Final = frozenset((S.RCPT, S.UNKN))

# Commands that clear the macro slots after their own (mi_clr_macros(ctx, idx + 1)).
CLEARS_MACROS_AFTER: Final[dict[int, int]] = {
    C.SMFIC_OPTNEG: -1,
    C.SMFIC_CONNECT: SLOT_CONNECT,
    C.SMFIC_HELO: SLOT_HELO,
    C.SMFIC_MAIL: SLOT_MAIL,
    C.SMFIC_RCPT: SLOT_RCPT,
}

_VALID_RESULTS: Final = frozenset(
    (C.SMFIS_CONTINUE, C.SMFIS_REJECT, C.SMFIS_DISCARD, C.SMFIS_ACCEPT, C.SMFIS_TEMPFAIL,
     C.SMFIS_NOREPLY, C.SMFIS_SKIP)
)
_CONTINUE: Final = R.CONTINUE.encode()
_SIMPLE: Final[dict[int, bytes]] = {
    C.SMFIS_CONTINUE: _CONTINUE,
    C.SMFIS_ACCEPT: R.ACCEPT.encode(),
    C.SMFIS_DISCARD: R.DISCARD.encode(),
    C.SMFIS_SKIP: R.SKIP.encode(),
}
_REJECT: Final = R.REJECT.encode()
_TEMPFAIL: Final = R.TEMPFAIL.encode()


@functools.lru_cache(maxsize=64)
def allowed_next(protocol: int) -> tuple[int, ...]:
    """Per state, the mask of states a command may move to, with libmilter's
    skip rule applied (engine.c trans_ok): from ``s``, a state allowed after a
    later state is also allowed when every state in between was negotiated
    away with its ``P_NO*`` bit (``protocol`` holds the application's bits)."""
    masks = []
    for old in State:
        allowed, s = NEXT[old], old
        while s < S.Q_NC:
            skip_bit = SKIP_BIT.get(State(s + 1))
            if skip_bit is None or not protocol & skip_bit:
                break
            s = State(s + 1)
            allowed |= NEXT[s]
        masks.append(allowed)
    return tuple(masks)


@functools.lru_cache(maxsize=64)
def reply_tables(app_protocol: int, mta_protocol: int) -> tuple[tuple[bool, ...], tuple[bool, ...]]:
    """Per state: does the application's NR bit silence its result, and does
    the MTA read a reply (its NR bit was not sent)?  (engine.c sendreply)"""
    noreply = tuple(bool(app_protocol & NR_BIT.get(s, 0)) for s in State)
    waits = tuple(not mta_protocol & NR_BIT.get(s, 0) for s in State)
    return noreply, waits


def in_transaction(state: State) -> bool:
    """libmilter's ST_IN_MAIL: between MAIL and end of message."""
    return S.MAIL <= state < S.ENDM


class Session:
    """One MTA connection's protocol state."""

    def __init__(self, max_data_size: int = C.DEFAULT_MAX_DATA_SIZE) -> None:
        self._frames = FrameDecoder(max_data_size)
        self.macros = MacroStore()
        self.state = S.INIT
        self.agreement: Agreement | None = None
        self._allowed = allowed_next(0)
        # Per state: the application promised no reply / the MTA reads one.
        self._noreply, self._waits = reply_tables(0, 0)
        self._skip_ok = False
        self._pending: deque[cmd.Command] = deque()
        self._awaiting: State | None = None  # a command waits for respond()
        self._reply_text: bytes | None = None
        self._in_eom = False
        self.ended = False
        # Command bytes dropped as out of order since the caller last cleared
        # this list (it logs them); bounded by what one receive_data() brought.
        self.dropped: list[int] = []

    # --- input ------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        self._frames.feed(data)

    def receive_eof(self) -> None:
        """The MTA closed the stream; raises TruncatedStream inside a packet."""
        self.ended = True
        self._frames.check_eof()

    @property
    def in_transaction(self) -> bool:
        return in_transaction(self.state)

    def _trans_ok(self, old: State, new: State) -> bool:
        return bool(self._allowed[old] & (1 << new))

    def next_event(self) -> cmd.Command | None:
        """The next command to act on, or ``None`` when more input is needed.

        MACRO packets are stored, not returned.  An out-of-order command inside
        a transaction yields an implied :class:`~.commands.Abort` first.
        Raises a :class:`~.errors.PeerError` on garbage; the session is over then.
        """
        if self._awaiting is not None:
            raise UsageError("respond() to the previous command first")
        if self.ended:
            return None
        if self._pending:
            command = self._pending.popleft()
            return self._take(command, _CODE_OF[type(command)])
        next_frame = self._frames.next_frame
        while True:
            frame = next_frame()
            if frame is None:
                return None
            code, payload = frame
            if code == C.SMFIC_MACRO:
                if not payload:
                    raise MalformedPacket("MACRO without data")
                self.macros.define_raw(payload[0], payload[1:])
                continue
            new = COMMAND_STATE.get(code)
            if new is None:
                cmd.parse_command(code, payload)  # raises UnknownCommand
                continue  # pragma: no cover
            if not self._allowed[self.state] & (1 << new):
                implied_abort = self.in_transaction
                if not self._trans_ok(S.HELO, new):
                    self.state = S.HELO
                    self.dropped.append(code)
                    if implied_abort:
                        return cmd.Abort()
                    continue
                # Parse while the transaction is still open: if the command is
                # malformed the session ends and abort() must still run (§6.1).
                command = cmd.parse_command(code, payload)
                self.state = S.HELO
                if implied_abort:
                    self._pending.append(command)
                    return cmd.Abort()
                return self._take(command, code)
            return self._take(PARSERS[code](payload), code)

    def _take(self, command: cmd.Command, code: int) -> cmd.Command:
        new = COMMAND_STATE[code]
        clear = CLEARS_MACROS_AFTER.get(code)
        if clear is not None:
            if clear < 0:
                self.macros.clear()
            else:
                self.macros.clear_after(clear)
        self.state = new
        if new == S.ABRT:
            pass
        elif new == S.QUIT:
            self.ended = True
        elif new == S.Q_NC:
            self.macros.clear()
        else:
            self._awaiting = new
            if new == S.ENDM:
                self._in_eom = True
        return command

    # --- negotiation -------------------------------------------------------------

    def offer(self, command: cmd.OptNeg) -> Offer:
        return Offer.from_command(command)

    def negotiated(self, agreement: Agreement) -> bytes:
        """Record the agreement and return the OPTNEG reply packet."""
        if self._awaiting is not S.OPTS:
            raise UsageError("no OPTNEG to answer")
        self._awaiting = None
        self.agreement = agreement
        self._allowed = allowed_next(agreement.app_protocol)
        self._noreply, self._waits = reply_tables(agreement.app_protocol, agreement.mta_protocol)
        self._skip_ok = bool(agreement.mta_protocol & C.SMFIP_SKIP)
        return agreement.reply().encode()

    def refuse(self) -> None:
        """Negotiation failed: no reply, the session ends."""
        self._awaiting = None
        self.ended = True

    @property
    def protocol(self) -> int:
        """The protocol bits the application asked for (pymilter's ``_protocol``)."""
        return self.agreement.app_protocol if self.agreement else 0

    @property
    def actions(self) -> int:
        return self.agreement.actions if self.agreement else C.SMFI_CURR_ACTS

    # --- replies -----------------------------------------------------------------

    def set_reply(self, text: bytes) -> None:
        """Pending REPLYCODE text, kept for the connection until used (§4.2)."""
        self._reply_text = text

    @property
    def awaiting(self) -> State | None:
        """The state of the command that waits for ``respond()``."""
        return self._awaiting

    def expects_reply(self) -> bool:
        """Will the MTA read a reply for the command being handled?"""
        state = self._awaiting
        return state is not None and self.expects_reply_for(state)

    def effective_result(self, result: int, honour_nr: bool = True) -> int:
        """What is forwarded for ``result`` at the current stage: a stage whose
        NR bit the application negotiated forwards nothing (NOREPLY), unless
        ``honour_nr`` is false; SKIP where the MTA cannot take it is CONTINUE."""
        state = self._awaiting
        if state is None:
            raise UsageError("no command waits for a reply")
        if honour_nr and self._noreply[state]:
            return C.SMFIS_NOREPLY
        if result == C.SMFIS_SKIP and not (state == S.BODY and self._skip_ok):
            return C.SMFIS_CONTINUE
        return result

    def respond(self, result: int, honour_nr: bool = True) -> bytes:
        """Bytes answering the current command for a callback ``result``.

        ``result`` must already be valid (``CONTINUE`` … ``SKIP``); the caller
        turns exceptions and junk into a result first.  ``honour_nr=False``
        forwards ``result`` even where the application promised no reply; use
        it only when the MTA reads a reply (``expects_reply()``).
        """
        state = self._awaiting
        if state is None:
            raise UsageError("no command waits for a reply")
        if result not in _VALID_RESULTS:
            raise UsageError(f"invalid callback result {result!r}")
        if honour_nr and self._noreply[state]:
            result = C.SMFIS_NOREPLY
        elif result == C.SMFIS_SKIP and not (state == S.BODY and self._skip_ok):
            result = C.SMFIS_CONTINUE
        self._awaiting = None
        self._in_eom = False
        if result == C.SMFIS_CONTINUE:
            return _CONTINUE
        if result == C.SMFIS_NOREPLY:
            # Emulated NR, or NOREPLY where none was negotiated: the MTA waits,
            # so CONTINUE keeps it going (libmilter would leave it hanging).
            return _CONTINUE if self._waits[state] else b""
        ends_transaction = result in (C.SMFIS_REJECT, C.SMFIS_TEMPFAIL, C.SMFIS_DISCARD) \
            and state not in KEEP_STATE_ON_ERROR
        if result == C.SMFIS_ACCEPT or ends_transaction:
            self.state = S.HELO
        if result == C.SMFIS_REJECT or result == C.SMFIS_TEMPFAIL:
            text = self._reply_text
            first = b"5"[0] if result == C.SMFIS_REJECT else b"4"[0]
            if text and text[0] == first:
                self._reply_text = None
                return R.ReplyCode(text).encode()
            return _REJECT if result == C.SMFIS_REJECT else _TEMPFAIL
        return _SIMPLE[result]

    def expects_reply_for(self, state: State) -> bool:
        """Does the MTA read a reply after a command that moved to ``state``?"""
        return self._waits[state]

    # --- end of message edits -------------------------------------------------------

    @property
    def in_eom(self) -> bool:
        """True while end of message is being answered (edits are legal)."""
        return self._in_eom

    def check_action(self, action: int) -> None:
        """Raise unless an edit needing ``action`` may be sent now (libmilter mi_sendok)."""
        if not self._in_eom:
            raise ActionNotAllowed("message edits are only allowed at end of message")
        if self.agreement is None or not self.agreement.actions & action:
            raise ActionNotAllowed(f"action {action:#x} was not negotiated")

    def modification(self, mod: R.Modification) -> bytes:
        self.check_action(mod.action)
        return mod.encode()

    def progress(self) -> bytes:
        """A PROGRESS packet while the MTA waits at end of message, else nothing
        (sendmail takes ``p`` only then; anywhere the MTA does not read a
        reply it would desynchronise the stream)."""
        return R.PROGRESS.encode() if self._in_eom else b""


_CODE_OF: Final[dict[type, int]] = {
    cmd.OptNeg: C.SMFIC_OPTNEG,
    cmd.Connect: C.SMFIC_CONNECT,
    cmd.Helo: C.SMFIC_HELO,
    cmd.Mail: C.SMFIC_MAIL,
    cmd.Rcpt: C.SMFIC_RCPT,
    cmd.Data: C.SMFIC_DATA,
    cmd.Header: C.SMFIC_HEADER,
    cmd.EndOfHeaders: C.SMFIC_EOH,
    cmd.Body: C.SMFIC_BODY,
    cmd.EndOfMessage: C.SMFIC_BODYEOB,
    cmd.Abort: C.SMFIC_ABORT,
    cmd.Quit: C.SMFIC_QUIT,
    cmd.QuitNewConnection: C.SMFIC_QUIT_NC,
    cmd.Unknown: C.SMFIC_UNKNOWN,
}


