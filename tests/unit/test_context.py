"""Milter.context.Context: callbacks, exception policy, traces A and D of
PROTOCOL.md §10.1, end-of-message output and session end."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from milters import shapes

import Milter
from Milter import lowlevel as L
from Milter.protocol import commands as cmd
from Milter.protocol import constants as C
from Milter.protocol import replies as R
from Milter.protocol.framing import FrameDecoder

from .helpers import Mta, UseFactory, decode_replies, h, inet, registration

MESSAGE: list[cmd.Command] = [
    cmd.Mail((b"<a@example.net>",)), cmd.Rcpt((b"<b@example.org>",)), cmd.Data(),
    cmd.Header(b"Subject", b"hi"), cmd.EndOfHeaders(), cmd.Body(b"body\r\n"),
    cmd.EndOfMessage()]


class Plain(Milter.Base):
    """Every callback overridden without decorators: every event is sent and
    answered.  ``fail_at`` names a callback that raises."""

    fail_at = ""
    result_at: dict[str, Any] = {}
    trail: list[str] = []

    def _cb(self, name: str) -> Any:
        type(self).trail.append(name)
        if name == self.fail_at:
            raise RuntimeError(f"boom in {name}")
        return self.result_at.get(name, Milter.CONTINUE)

    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        return self._cb("connect")  # type: ignore[no-any-return]

    def hello(self, hostname: str) -> int:
        return self._cb("hello")  # type: ignore[no-any-return]

    def envfrom(self, f: str, *params: str) -> int:
        return self._cb("envfrom")  # type: ignore[no-any-return]

    def envrcpt(self, to: str, *params: str) -> int:
        return self._cb("envrcpt")  # type: ignore[no-any-return]

    def data(self) -> int:
        return self._cb("data")  # type: ignore[no-any-return]

    def header(self, field: str, value: str) -> int:
        return self._cb("header")  # type: ignore[no-any-return]

    def eoh(self) -> int:
        return self._cb("eoh")  # type: ignore[no-any-return]

    def body(self, blk: bytes) -> int:
        return self._cb("body")  # type: ignore[no-any-return]

    def eom(self) -> int:
        return self._cb("eom")  # type: ignore[no-any-return]

    def abort(self) -> int:
        return self._cb("abort")  # type: ignore[no-any-return]

    def close(self) -> int:
        return self._cb("close")  # type: ignore[no-any-return]


def plain(fail_at: str = "", **results: Any) -> type[Plain]:
    return type("P", (Plain,), {"fail_at": fail_at, "result_at": results, "trail": []})


# --- exception policy (§8 of PYMILTER_API.md, §9 of PROTOCOL.md) ----------------------------

STAGES: list[tuple[str, list[cmd.Command]]] = [
          ("connect", [inet()]), ("hello", [inet(), cmd.Helo(b"h")]),
          ("envfrom", [inet(), cmd.Helo(b"h"), MESSAGE[0]]),
          ("envrcpt", [inet(), cmd.Helo(b"h"), *MESSAGE[:2]]),
          ("header", [inet(), cmd.Helo(b"h"), *MESSAGE[:4]]),
          ("body", [inet(), cmd.Helo(b"h"), *MESSAGE[:6]]),
          ("eom", [inet(), cmd.Helo(b"h"), *MESSAGE])]


@pytest.mark.parametrize(("stage", "packets"), STAGES, ids=[s for s, _ in STAGES])
def test_raising_callback_tempfails_with_451_and_logs_traceback(
        use_factory: UseFactory, caplog: pytest.LogCaptureFixture, stage: str,
        packets: list[cmd.Command]) -> None:
    use_factory(plain(fail_at=stage))
    mta = Mta(registration(name="unittest"))
    mta.optneg()
    with caplog.at_level(logging.ERROR, "Milter"):
        out = mta.send(*packets)
    assert out[:-1] == [R.CONTINUE] * (len(packets) - 1)
    assert out[-1] == R.ReplyCode(b"451 4.3.0 pymilter: untrapped exception in unittest")
    records = [r for r in caplog.records if r.exc_info]
    assert len(records) == 1
    assert f"boom in {stage}" in caplog.text
    assert "Traceback" in caplog.text
    assert not mta.ctx.closed


@pytest.mark.parametrize(("policy", "reply"), [
    (L.TEMPFAIL, R.ReplyCode(b"451 4.3.0 pymilter: untrapped exception in unittest")),
    (L.REJECT, R.ReplyCode(b"554 5.3.0 pymilter: untrapped exception in unittest")),
    (L.CONTINUE, R.CONTINUE),
    (L.ACCEPT, R.ACCEPT),
])
def test_exception_policies(use_factory: UseFactory, policy: int, reply: R.Reply) -> None:
    use_factory(plain(fail_at="envrcpt"))
    reg = registration(policy=policy)
    mta = Mta(reg)
    mta.optneg()
    assert mta.send(inet(), cmd.Helo(b"h"), *MESSAGE[:2])[-1] == reply
    # The next connection with the same registration is not affected.
    use_factory(plain())
    fresh = Mta(reg)
    fresh.optneg()
    assert fresh.send(inet(), cmd.Helo(b"h"), *MESSAGE) == [R.CONTINUE] * 9


def test_long_milter_name_cut_to_40(use_factory: UseFactory) -> None:
    use_factory(plain(fail_at="hello"))
    mta = Mta(registration(name="n" * 60))
    mta.optneg()
    assert mta.send(inet(), cmd.Helo(b"h"))[-1] == R.ReplyCode(
        b"451 4.3.0 pymilter: untrapped exception in " + b"n" * 40)


def test_set_exception_policy_validates() -> None:
    saved = L.registration().exception_policy
    try:
        for bad in (L.DISCARD, L.NOREPLY, 99):
            with pytest.raises(Milter.error):
                Milter.set_exception_policy(bad)
        Milter.set_exception_policy(L.REJECT)
        assert L.registration().exception_policy == L.REJECT
    finally:
        L.registration().exception_policy = saved


@pytest.mark.parametrize("bad", [None, "0", 1.0, 5, 6, 9, -1, 10, [0]])
def test_non_int_or_unknown_result_goes_through_the_policy(
        use_factory: UseFactory, caplog: pytest.LogCaptureFixture, bad: Any) -> None:
    use_factory(plain(hello=bad))
    mta = Mta()
    mta.optneg()
    with caplog.at_level(logging.ERROR, "Milter"):
        out = mta.send(inet(), cmd.Helo(b"h"))
    assert out == [R.CONTINUE, R.ReplyCode(b"451 4.3.0 pymilter: untrapped exception in unittest")]
    assert "the helo callback returned" in caplog.text


def test_bool_result_is_an_int(use_factory: UseFactory) -> None:
    use_factory(plain(hello=True))
    mta = Mta()
    mta.optneg()
    assert mta.send(inet(), cmd.Helo(b"h")) == [R.CONTINUE, R.REJECT]


def test_abort_and_close_results_and_exceptions_are_ignored(use_factory: UseFactory) -> None:
    klass = plain(fail_at="abort", close="junk")
    use_factory(klass)
    mta = Mta()
    mta.optneg()
    mta.send(inet(), cmd.Helo(b"h"), *MESSAGE[:2])
    assert mta.send(cmd.Abort()) == []
    mta.send(*MESSAGE)
    assert mta.send(cmd.Quit()) == []
    assert klass.trail[-2:] == ["eom", "close"]
    assert mta.ctx.closed


def test_failed_eom_sends_no_half_edit_set(use_factory: UseFactory) -> None:
    class HalfEdit(Milter.Base):
        def eom(self) -> int:
            self.addheader("X-A", "1")
            self.replacebody(b"new")
            raise RuntimeError("after the edits")

    use_factory(HalfEdit)
    mta = Mta()
    mta.optneg()
    out = mta.send(inet(), cmd.Helo(b"h"), *MESSAGE)
    assert out[-1] == R.ReplyCode(b"451 4.3.0 pymilter: untrapped exception in unittest")
    assert not any(isinstance(r, R.AddHeader | R.ReplaceBody) for r in out)


def test_noreply_failure_is_answered_at_the_next_reply(use_factory: UseFactory) -> None:
    """README deviation: a failure where the MTA reads no reply is deferred to
    the next command it waits on instead of being lost."""

    class NrHello(Milter.Base):
        @Milter.noreply
        def hello(self, hostname: str) -> int:
            raise RuntimeError("boom")

        def envfrom(self, f: str, *params: str) -> int:
            return Milter.CONTINUE

    use_factory(NrHello)
    mta = Mta()
    reply = mta.optneg()
    assert reply.protocol & C.SMFIP_NR_HELO
    assert mta.send(cmd.Helo(b"h")) == []
    assert mta.send(MESSAGE[0]) == [
        R.ReplyCode(b"451 4.3.0 pymilter: untrapped exception in unittest")]


def accepting(calls: list[str]) -> type[Milter.Base]:
    """A milter whose eom() accepts and abort() continues, each noting its
    name in ``calls``."""

    class Accepting(Milter.Base):
        def eom(self) -> int:
            calls.append("eom")
            return Milter.ACCEPT

        def abort(self) -> int:
            calls.append("abort")
            return Milter.CONTINUE

    return Accepting


def test_a_deferred_failure_is_not_answered_over_by_eom(use_factory: UseFactory) -> None:
    """pymilter's milter-template.py: a @noreply body() that raises, an eom()
    that accepts.  The deferred failure is the message's answer; no callback
    runs until it is sent (eom's ACCEPT would deliver a message the milter
    never saw whole), and the next message starts clean."""
    calls: list[str] = []

    class NrBody(accepting(calls)):  # type: ignore[misc]
        @Milter.noreply
        def body(self, chunk: bytes) -> int:
            calls.append("body")
            raise TypeError("str + bytes")

    use_factory(NrBody)
    mta = Mta()
    reply = mta.optneg()
    assert reply.protocol & C.SMFIP_NR_BODY
    mta.send(inet(), cmd.Helo(b"h"), *MESSAGE[:-1])
    assert mta.send(cmd.Body(b"more"), cmd.EndOfMessage()) == [
        R.ReplyCode(b"451 4.3.0 pymilter: untrapped exception in unittest")]
    assert calls == ["body"]
    mta.send(cmd.Abort())
    calls.clear()
    out = mta.send(*MESSAGE)
    assert out[-1] == R.ReplyCode(b"451 4.3.0 pymilter: untrapped exception in unittest")
    assert calls == ["body"]


# --- negotiation through the context --------------------------------------------------------

def test_negotiate_returning_all_opts(use_factory: UseFactory) -> None:
    """PYMILTER_API.md §6.2: ALL_OPTS is a valid negotiate() result."""

    class AllOpts(Milter.Base):
        def negotiate(self, opts: list[int]) -> int:
            return Milter.ALL_OPTS

    use_factory(AllOpts)
    mta = Mta()
    assert mta.send(cmd.OptNeg(6, 0x1FF, 0x1FFFFF)) == [R.OptNegReply(6, 0x1FF, C.SMFIP_SKIP)]


@pytest.mark.parametrize("mangle", [list.clear, lambda opts: opts.__delitem__(slice(1, None)),
                                    lambda opts: opts.__setitem__(1, None)])
def test_negotiate_mangling_opts_refuses_the_session(use_factory: UseFactory,
                                                     mangle: Callable[[list[int]], Any]) -> None:
    """A negotiate() that leaves opts unusable ends that session (no reply,
    close once); nothing escapes Context.receive (§9)."""
    closes: list[int] = []

    class Mangler(Milter.Base):
        def negotiate(self, opts: list[int]) -> int:
            mangle(opts)
            return Milter.CONTINUE

        def close(self) -> int:
            closes.append(1)
            return Milter.CONTINUE

    use_factory(Mangler)
    mta = Mta()
    assert mta.raw(cmd.OptNeg(6, 0x1FF, 0x1FFFFF), inet()) == b""
    assert mta.ctx.closed
    assert closes == [1]


def test_no_negotiate_callback_uses_flags_and_unregistered_bits() -> None:
    reg = registration(callbacks={"eom": lambda ctx: L.ACCEPT}, flags=L.ADDHDRS | L.CHGBODY)
    mta = Mta(reg)
    reply = mta.optneg()
    assert reply.actions == L.ADDHDRS | L.CHGBODY
    assert reply.protocol == 0x37F  # NO bits of every callback not registered
    assert mta.send(cmd.EndOfMessage()) == [R.ACCEPT]


# --- traces -------------------------------------------------------------------------------------

def test_trace_a_minimal_postfix_session(use_factory: UseFactory) -> None:
    calls: list[str] = []

    class EomAccept(accepting(calls)):  # type: ignore[misc]
        def close(self) -> int:
            calls.append("close")
            return Milter.CONTINUE

    use_factory(EomAccept)
    mta = Mta()
    assert mta.raw(cmd.OptNeg(6, 0x1FF, 0x1FFFFF)) == h(
        "00 00 00 0d 4f 00 00 00 06 00 00 01 ff 00 00 07 7f")
    macros = [cmd.Macro(ord(c), ((b"j", b"mx"),)) for c in "CHMRT"]
    assert mta.send(*macros) == []
    assert mta.send(cmd.Macro(ord("E"), ((b"i", b"Q1"),)), cmd.EndOfMessage()) == [R.ACCEPT]
    assert mta.send(cmd.Abort()) == []
    assert calls == ["eom", "abort"]
    assert mta.send(cmd.Quit()) == []
    assert calls == ["eom", "abort", "close"]
    assert mta.ctx.closed
    mta.eof()
    assert calls.count("close") == 1


def test_trace_d_nr_emulation_for_postfix_v2(use_factory: UseFactory, noreply_is_7: None) -> None:
    """§10.1 D: offer 2/0x1FF/0x7F, template-like milter; OPTNEG reply
    2/0x1FF/0; the milter writes 'c' itself after connect, envrcpt, every
    header, eoh and every body; the @noreply methods return NOREPLY (7)."""
    returned: list[tuple[str, int]] = []

    Template = shapes.template()

    glue = Milter.glue_callbacks()

    def recording(name: str) -> Any:
        def cb(ctx: Any, *args: Any) -> Any:
            rc = glue[name](ctx, *args)
            returned.append((name, rc))
            return rc
        return cb

    callbacks = {name: recording(name) if name not in ("negotiate", "close") else fn
                 for name, fn in glue.items()}
    use_factory(Template)
    mta = Mta(registration(callbacks=callbacks))
    assert mta.raw(cmd.OptNeg(2, 0x1FF, 0x7F)) == R.OptNegReply(2, 0x1FF, 0).encode()
    assert mta.ctx.getpriv()._protocol == 0xC9080
    out = mta.send(inet(), cmd.Helo(b"h"), cmd.Mail((b"<a>",)), cmd.Rcpt((b"<b>",)),
                   cmd.Header(b"A", b"1"), cmd.Header(b"B", b"2"), cmd.EndOfHeaders(),
                   cmd.Body(b"x"), cmd.Body(b"y"), cmd.EndOfMessage())
    assert out == [R.CONTINUE] * 10
    assert returned == [("connect", 7), ("helo", 0), ("envfrom", 0), ("envrcpt", 7),
                        ("header", 7), ("header", 7), ("eoh", 7), ("body", 7), ("body", 7),
                        ("eom", 0)]


def test_nr_offered_by_mta_means_no_bytes(use_factory: UseFactory) -> None:
    class NrHeader(Milter.Base):
        @Milter.noreply
        def header(self, field: str, value: str) -> int:
            return Milter.CONTINUE

    use_factory(NrHeader)
    mta = Mta()
    assert mta.optneg().protocol & C.SMFIP_NR_HDR
    assert mta.send(cmd.Header(b"A", b"1"), cmd.Header(b"B", b"2")) == []


# --- end of message output ------------------------------------------------------------------------

def test_replacebody_is_split_at_65535_and_sent_before_the_verdict(use_factory: UseFactory) -> None:
    body = bytes(range(256)) * 1000  # 256000 bytes, in several calls

    class Replacer(Milter.Base):
        def eom(self) -> int:
            self.addheader("X-Before", "1")
            for i in range(0, len(body), 100_000):
                self.replacebody(body[i:i + 100_000])
            self.addheader("X-After", "1")
            return Milter.ACCEPT

    use_factory(Replacer)
    mta = Mta()
    mta.optneg()
    wire = mta.raw(cmd.EndOfMessage())
    out = decode_replies(wire)
    chunks = [r for r in out if isinstance(r, R.ReplaceBody)]
    assert [len(c.chunk) for c in chunks] == [65535] * 3 + [256000 - 3 * 65535]
    assert b"".join(c.chunk for c in chunks) == body
    # Edits in call order, then the body as one contiguous run, then the verdict.
    assert out[:2] == [R.AddHeader(b"X-Before", b"1"), R.AddHeader(b"X-After", b"1")]
    assert out[2:-1] == chunks
    assert out[-1] == R.ACCEPT
    # No packet carries more than 65535 bytes of data (§2): a decoder with
    # libmilter's limit accepts the whole output.
    decoder = FrameDecoder(max_data_size=65535)
    decoder.feed(wire)
    frames = 0
    while decoder.next_frame() is not None:
        frames += 1
    assert frames == len(out)


def test_empty_replacement_body_is_one_empty_packet(use_factory: UseFactory) -> None:
    class Emptier(Milter.Base):
        def eom(self) -> int:
            self.replacebody(b"")
            return Milter.CONTINUE

    use_factory(Emptier)
    mta = Mta()
    mta.optneg()
    assert mta.raw(cmd.EndOfMessage()) == b"\0\0\0\x01b\0\0\0\x01c"


def test_progress_only_while_eom_is_answered(use_factory: UseFactory) -> None:
    class Progress(Milter.Base):
        def hello(self, hostname: str) -> int:
            self.progress()
            return Milter.CONTINUE

        def eom(self) -> int:
            self.progress()
            return Milter.CONTINUE

    use_factory(Progress)
    mta = Mta()
    mta.optneg()
    assert mta.send(cmd.Helo(b"h")) == [R.CONTINUE]
    assert mta.send(cmd.EndOfMessage()) == [R.PROGRESS, R.CONTINUE]


def test_edits_outside_eom_and_not_negotiated_raise(use_factory: UseFactory) -> None:
    errors: list[str] = []

    class Misuse(Milter.Base):
        def hello(self, hostname: str) -> int:
            try:
                self.addheader("X-A", "b")
            except Milter.error as exc:
                errors.append(f"hello:{exc}")
            return Milter.CONTINUE

        def eom(self) -> int:
            actions: list[Callable[[], None]] = [lambda: self.addheader("X-A", "b"),
                           lambda: self.chgheader("X-A", 1, "b"),
                           lambda: self.addrcpt("<x>"),
                           lambda: self.addrcpt("<x>", "NOTIFY=NEVER"),
                           lambda: self.delrcpt("<x>"),
                           lambda: self.replacebody(b"x"),
                           lambda: self.chgfrom("<x>"),
                           lambda: self.quarantine("why")]
            for action in actions:
                try:
                    action()
                except Milter.DisabledAction as exc:
                    errors.append(f"disabled:{exc}")
            return Milter.CONTINUE

    use_factory(Misuse)
    mta = Mta()
    mta.optneg(actions=L.ADDHDRS)
    assert mta.send(cmd.Helo(b"h"), cmd.EndOfMessage()) == [
        R.CONTINUE, R.AddHeader(b"X-A", b"b"), R.CONTINUE]
    assert errors[0].startswith("hello:cannot add header")
    assert errors[1:] == ["disabled:CHGHDRS", "disabled:ADDRCPT", "disabled:ADDRCPT",
                          "disabled:DELRCPT", "disabled:MODBODY", "disabled:CHGFROM",
                          "disabled:QUARANTINE"]


@pytest.mark.parametrize(("call", "message"), [
    (lambda m: m.addheader("Bad Name", "v"), "invalid header name"),
    (lambda m: m.addheader("X-A", "line\nnot folded"), "line break"),
    (lambda m: m.addheader("X-A", "cr\r\n folded"), "CR"),
    (lambda m: m.chgheader("X-A", -1, "v"), "negative index"),
    (lambda m: m.addrcpt(""), "empty address"),
    (lambda m: m.quarantine(""), "empty reason"),
    (lambda m: m.setreply("250", None, "ok"), "cannot set reply"),
    (lambda m: m.setreply("550", "4.7.1", "class mismatch"), "cannot set reply"),
    (lambda m: m.setreply("550", "5.7.1", "x" * 981), "cannot set reply"),
    (lambda m: m.setreply("550", "5.7.1", *(["l"] * 33)), "cannot set reply"),
])
def test_bad_action_arguments_raise_milter_error(use_factory: UseFactory, call: Any,
                                                message: str) -> None:
    seen: list[str] = []

    class Bad(Milter.Base):
        def eom(self) -> int:
            try:
                call(self)
            except Milter.error as exc:
                seen.append(str(exc))
            return Milter.CONTINUE

    use_factory(Bad)
    mta = Mta()
    mta.optneg()
    assert mta.send(cmd.EndOfMessage()) == [R.CONTINUE]
    assert len(seen) == 1 and message in seen[0]


def test_setreply_variants(use_factory: UseFactory) -> None:
    texts: list[bytes] = []

    class Replies(Milter.Base):
        def envrcpt(self, to: str, *params: str) -> int:
            n = len(texts)
            if n == 0:
                self.setreply("550")
            elif n == 1:
                self.setreply("550", "5.7.1")
            elif n == 2:
                self.setreply("450", None, "one", "two")
                return Milter.TEMPFAIL
            else:
                self.setreply("550", "5.7.1", "100%% sure")
            return Milter.REJECT

    use_factory(Replies)
    mta = Mta()
    mta.optneg()
    mta.send(inet(), cmd.Helo(b"h"), cmd.Mail((b"<a>",)))
    for _ in range(4):
        (reply,) = mta.send(cmd.Rcpt((b"<b>",)))
        assert isinstance(reply, R.ReplyCode)
        texts.append(reply.text)
    assert texts == [b"550 ", b"550 5.7.1", b"450-4.0.0 one\r\n450 4.0.0 two",
                     b"550 5.7.1 100%% sure"]


# --- session end ----------------------------------------------------------------------------

def test_close_runs_once_whatever_ends_the_session(use_factory: UseFactory) -> None:
    klass = plain()
    use_factory(klass)
    for ending in ("quit", "eof", "garbage", "eof-twice"):
        klass.trail.clear()
        mta = Mta()
        mta.optneg()
        mta.send(inet(), cmd.Helo(b"h"), *MESSAGE)
        if ending == "quit":
            mta.send(cmd.Quit())
        elif ending == "garbage":
            mta.raw(b"\0\0\0\x01Z")
        else:
            mta.eof()
            if ending == "eof-twice":
                mta.eof()
        mta.eof()
        assert mta.ctx.closed
        assert klass.trail.count("close") == 1, ending
        assert "abort" not in klass.trail
        assert mta.raw(cmd.Helo(b"late")) == b""
        assert mta.sent_after_end == 0


def test_quit_nc_closes_and_new_connect_gets_a_new_object(use_factory: UseFactory) -> None:
    """§6.1 QUIT_NC: close() runs, and the CONNECT that follows creates a new
    object through factory() (pymilter's connect glue); each object is closed
    exactly once."""
    made: list[Any] = []

    class Counted(Milter.Base):
        def __init__(self) -> None:
            self.closed = 0
            self.connected: list[str] = []
            made.append(self)

        def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
            self.connected.append(hostname)
            assert self._ctx is not None
            return Milter.CONTINUE

        def close(self) -> int:
            self.closed += 1
            return Milter.CONTINUE

    use_factory(Counted)
    mta = Mta()
    mta.optneg()
    assert mta.send(inet("first"), cmd.Helo(b"h"), *MESSAGE[:2], cmd.EndOfMessage()) == \
        [R.CONTINUE] * 5
    assert mta.send(cmd.QuitNewConnection()) == []
    assert [m.closed for m in made] == [1]
    assert mta.send(inet("second"), cmd.Helo(b"h")) == [R.CONTINUE] * 2
    mta.eof()
    assert len(made) == 2
    assert [m.connected for m in made] == [["first"], ["second"]]
    assert [m.closed for m in made] == [1, 1]
