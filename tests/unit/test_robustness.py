"""Robustness of Milter.context.Context against any byte stream (PROTOCOL.md §9).

Whatever arrives, ``Context.receive`` never raises: it processes the input or
ends that session.  Nothing is sent once the session has ended, everything
sent is a well-formed reply packet, and the end of the session (with the EOF
that follows) runs close exactly once for each milter object.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from milters.compat_milter import CompatMilter
from mutations import Mutator, pieces_of

import Milter
from Milter import lowlevel as L
from Milter.context import Context
from Milter.protocol import commands as cmd
from Milter.protocol import constants as C
from Milter.protocol import replies as R

from .helpers import PROPERTY, commands, decode_replies, encode_all, inet, split_points


class FuzzMilter(Milter.Base):
    """Every callback overridden; uses macros, reply texts and every edit."""

    made: list[Milter.Base] = []

    def __init__(self) -> None:
        self.closes = 0
        self.eoms = 0
        FuzzMilter.made.append(self)

    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        self.getsymval("j")
        return Milter.CONTINUE

    def hello(self, hostname: str) -> int:
        if hostname == "reject":
            self.setreply("550", "5.7.1", "go away", "now")
            return Milter.REJECT
        return Milter.CONTINUE

    def envfrom(self, f: str, *params: str) -> int:
        self.getsymval("{auth_authen}")
        return Milter.TEMPFAIL if f == "<tempfail>" else Milter.CONTINUE

    def envrcpt(self, to: str, *params: str) -> int:
        return Milter.REJECT if to == "<reject>" else Milter.CONTINUE

    def data(self) -> int:
        return Milter.CONTINUE

    def header(self, field: str, value: str) -> int:
        if field == "X-Raise":
            raise ValueError("raised on purpose")
        return Milter.CONTINUE

    def eoh(self) -> int:
        return Milter.CONTINUE

    def body(self, blk: bytes) -> int:
        return Milter.SKIP if blk.startswith(b"SKIP") else Milter.CONTINUE

    def unknown(self, cmd: str) -> int:
        return Milter.TEMPFAIL

    def eom(self) -> int:
        self.eoms += 1
        self.progress()
        self.addheader("X-Fuzz", "1")
        self.addheader("X-Top", "1", 0)
        self.chgheader("Subject", 1, "")
        self.addrcpt("<x@example.com>", "NOTIFY=NEVER")
        self.delrcpt("<b@example.org>")
        self.replacebody(b"replaced\r\n")
        self.chgfrom("<new@example.net>")
        self.quarantine("fuzz")
        return Milter.ACCEPT

    def abort(self) -> int:
        return Milter.CONTINUE

    def close(self) -> int:
        self.closes += 1
        return Milter.CONTINUE


class EomOnly(Milter.Base):
    """Only eom: negotiates 0x77F, so the MTA skips everything else (trace A)."""

    def __init__(self) -> None:
        self.closes = 0
        self.eoms = 0
        FuzzMilter.made.append(self)

    def eom(self) -> int:
        self.eoms += 1
        self.addheader("X-Eom-Only", "1")
        return Milter.CONTINUE

    def close(self) -> int:
        self.closes += 1
        return Milter.CONTINUE


class CountedCompat(CompatMilter):
    def __init__(self) -> None:
        super().__init__()
        FuzzMilter.made.append(self)


@contextmanager
def quiet_milter_log() -> Iterator[None]:
    """Protocol errors are logged per session; keep 100k of them out of the report."""
    logger = logging.getLogger("Milter")
    saved = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(saved)


@dataclass
class Harness:
    """One registration shared by every run, as a server shares it."""

    factories: tuple[Callable[[], Milter.Base], ...] = (FuzzMilter, CountedCompat, EomOnly)
    terminal_closes: int = 0
    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("ended_in_receive", "open_at_eof", "eom", "replies", "edits"), 0))

    def __post_init__(self) -> None:
        callbacks: dict[str, L.Callback | None] = dict(Milter.glue_callbacks())
        glue_close = Milter.glue_callbacks()["close"]

        def close(ctx: Context) -> int:
            if ctx.closed:  # the close of the session's end, not QUIT_NC's
                self.terminal_closes += 1
            return glue_close(ctx)  # type: ignore[no-any-return]

        callbacks["close"] = close
        self.registration = L.Registration(name="fuzz", callbacks=callbacks, registered=True,
                                           max_data_size=70000)

    def run(self, pieces: list[bytes], which: int = 0) -> bytes:
        FuzzMilter.made.clear()
        self.terminal_closes = 0
        out: list[bytes] = []
        late: list[bytes] = []
        ctx: Context

        def send(data: bytes) -> None:
            (late if ctx.session.ended else out).append(bytes(data))

        saved = Milter.factory
        Milter.factory = self.factories[which % len(self.factories)]
        try:
            ctx = Context(self.registration, send, "fuzz")
            for piece in pieces:
                ctx.receive(piece)  # must never raise
            ended = ctx.closed
            ctx.connection_lost()  # the EOF that follows
            ctx.connection_lost()
        finally:
            Milter.factory = saved
        assert late == [], "sent after the session ended"
        assert ctx.closed
        assert self.terminal_closes == 1
        replies = decode_replies(b"".join(out))  # every packet well-formed and complete
        assert sum(isinstance(r, R.OptNegReply) for r in replies) <= 1
        for milter in FuzzMilter.made:
            assert getattr(milter, "closes", 0) + getattr(milter, "closed", 0) == 1
        self.stats["ended_in_receive" if ended else "open_at_eof"] += 1
        self.stats["replies"] += len(replies)
        self.stats["edits"] += sum(isinstance(r, R.AddHeader) for r in replies)
        self.stats["eom"] += sum(m.calls.count("eom") if isinstance(m, CompatMilter)
                                 else getattr(m, "eoms", 0) for m in FuzzMilter.made)
        return b"".join(out)


# --- valid sessions to mutate -----------------------------------------------------------

def _message(sender: bytes = b"<a@example.net>", *, headers: int = 2, body: bytes = b"hi\r\n",
             macros: bool = True) -> list[cmd.Command]:
    out: list[cmd.Command] = []
    if macros:
        out.append(cmd.Macro(ord("M"), ((b"i", b"Q123"), (b"{auth_authen}", b"alice"))))
    out += [cmd.Mail((sender, b"SIZE=100")), cmd.Rcpt((b"<b@example.org>",)),
            cmd.Rcpt((b"<reject>",)), cmd.Data()]
    out += [cmd.Header(b"Subject" if i == 0 else b"X-H%d" % i, b"value %d" % i)
            for i in range(headers)]
    out += [cmd.EndOfHeaders(), cmd.Body(body), cmd.Macro(ord("E"), ((b"i", b"Q123"),)),
            cmd.EndOfMessage()]
    return out


def _opening(version: int = 6, protocol: int = C.SMFI_CURR_PROT, helo: bytes = b"client",
             ) -> list[cmd.Command]:
    return [cmd.OptNeg(version, C.SMFI_CURR_ACTS, protocol),
            cmd.Macro(ord("C"), ((b"j", b"mx.example.org"), (b"{daemon_name}", b"smtpd"))),
            inet(), cmd.Macro(ord("H"), ((b"{tls_version}", b"TLSv1.3"),)), cmd.Helo(helo)]


_SESSIONS: list[list[cmd.Command]] = [
    [*_opening(), *_message(), cmd.Quit()],
    [*_opening(), *_message(), cmd.Abort(), *_message(b"<tempfail>"), cmd.Abort(),
     *_message(headers=5), cmd.Abort(), cmd.Quit()],  # Postfix: ABORT after every message
    [*_opening(2, 0x7F), *_message(), cmd.Quit()],  # Postfix milter_protocol = 2
    [*_opening(4, 0x37F), *_message(body=b"SKIP\r\n" * 3), cmd.Unknown(b"XFOO"), cmd.Quit()],
    [*_opening(helo=b"reject"), cmd.Helo(b"again"), *_message(), cmd.Quit()],
    [*_opening(), *_message()[:4], cmd.Mail((b"<c>",)), *_message(), cmd.Quit()],
    [*_opening(), *_message()[:7], cmd.Header(b"X-Raise", b"1"), *_message()[7:], *_message(),
     cmd.Quit()],
    [*_opening(), *_message(body=b"x" * 60000), cmd.EndOfMessage(b"tail"), cmd.Quit()],
    [*_opening(), *_message(), cmd.Unknown(b"VRFY x"), *_message(), cmd.Quit()],
    [cmd.OptNeg(6, 0x1FF, 0x1FFFFF), cmd.Macro(ord("E"), ()), cmd.EndOfMessage(), cmd.Abort(),
     cmd.Quit()],
]
BASE_SESSIONS: list[bytes] = [encode_all(s) for s in _SESSIONS]
MUTATOR = Mutator(BASE_SESSIONS)
mutate = MUTATOR.mutate


# --- the tests ------------------------------------------------------------------------------

def test_base_sessions_are_valid_and_reach_eom() -> None:
    harness = Harness()
    with quiet_milter_log():
        for data in BASE_SESSIONS:
            for which in (0, 1, 2):
                before = harness.stats["eom"]
                whole = harness.run([data], which)
                # Every base session gets to EOM, except the bare trace-A one,
                # which only a milter that skips every stage accepts (§6.2).
                reaches = which == 2 or data is not BASE_SESSIONS[-1]
                assert (harness.stats["eom"] > before) == reaches
                assert harness.run([data[k:k + 1] for k in range(len(data))], which) == whole
    assert harness.stats["open_at_eof"] + harness.stats["ended_in_receive"] == \
        6 * len(BASE_SESSIONS)


@PROPERTY
@given(st.binary(max_size=400))
def test_any_bytes(data: bytes) -> None:
    with quiet_milter_log():
        Harness().run([data])


@PROPERTY
@given(st.binary(max_size=200), st.integers(0, 2))
def test_any_bytes_after_a_valid_opening(data: bytes, which: int) -> None:
    with quiet_milter_log():
        Harness().run([encode_all(_opening()), data], which)


@PROPERTY
@given(st.lists(commands, max_size=20), st.data(), st.integers(0, 2))
def test_any_command_sequence_at_any_split(cmds: list[cmd.Command], data: st.DataObject,
                                          which: int) -> None:
    wire = encode_all([cmd.OptNeg(6, 0x1FF, 0x1FFFFF), *cmds])
    with quiet_milter_log():
        Harness().run(data.draw(split_points(wire)), which)


@PROPERTY
@given(st.randoms(use_true_random=False))
def test_mutated_sessions(rng: random.Random) -> None:
    data, i = mutate(rng)
    with quiet_milter_log():
        Harness().run(pieces_of(data, rng), i)


FUZZ_SEED = 20240611
FUZZ_INPUTS = 100_000


def test_deterministic_fuzz_run() -> None:
    """100 000 mutated sessions (bit flips, truncations, splices, random
    lengths and command bytes, inserted, deleted and duplicated bytes), seeded."""
    rng = random.Random(FUZZ_SEED)
    harness = Harness()
    started = time.perf_counter()
    with quiet_milter_log():
        for n in range(FUZZ_INPUTS):
            data, i = mutate(rng)
            try:
                harness.run(pieces_of(data, rng), i + n)
            except AssertionError as exc:
                raise AssertionError(f"fuzz input #{n} ({data.hex()}): {exc}") from exc
    elapsed = time.perf_counter() - started
    stats = harness.stats
    print(f"\nfuzz: {FUZZ_INPUTS} inputs in {elapsed:.1f} s; {stats}")
    # The mutations must exercise both outcomes and reach deep into sessions.
    assert stats["ended_in_receive"] > FUZZ_INPUTS // 10
    assert stats["open_at_eof"] > FUZZ_INPUTS // 10
    assert stats["eom"] > FUZZ_INPUTS // 10
    assert stats["edits"] > FUZZ_INPUTS // 10
