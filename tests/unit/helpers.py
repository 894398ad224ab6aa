"""Shared helpers for the unit tier: hex vectors, a scripted MTA around a
:class:`~Milter.context.Context`, a session driver and Hypothesis strategies."""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import Milter
from Milter import lowlevel as L
from Milter.context import Context
from Milter.protocol import commands as cmd
from Milter.protocol import constants as C
from Milter.protocol import replies as R
from Milter.protocol.framing import FrameDecoder
from Milter.protocol.negotiation import Offer, settle
from Milter.protocol.session import Session

UseFactory = Callable[[Callable[[], Milter.Base]], None]

# No deadline: a deadline is a timing assertion, and the tier must not have any.
PROPERTY = settings(deadline=None, max_examples=150,
                    suppress_health_check=[HealthCheck.too_slow])
PROPERTY_SMALL = settings(deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])


@contextlib.contextmanager
def factory_as(factory: Callable[[], Milter.Base]) -> Iterator[None]:
    """``Milter.factory = factory`` for the block (for ``@given`` tests, which
    must not use function-scoped fixtures)."""
    saved = Milter.factory
    Milter.factory = factory
    try:
        yield
    finally:
        Milter.factory = saved


def h(text: str) -> bytes:
    """Bytes from the hex dumps of PROTOCOL.md §10 (whitespace ignored)."""
    return bytes.fromhex("".join(text.split()))


def decode_replies(data: bytes) -> list[R.Reply]:
    """Every packet in ``data`` as the MTA would decode it; all must be complete."""
    decoder = FrameDecoder(max_data_size=1 << 24)
    decoder.feed(data)
    out: list[R.Reply] = []
    while (frame := decoder.next_frame()) is not None:
        out.append(R.parse_reply(*frame))
    decoder.check_eof()
    return out


def encode_all(items: Iterable[cmd.Command | bytes]) -> bytes:
    return b"".join(i if isinstance(i, bytes) else i.encode() for i in items)


def registration(policy: int = L.TEMPFAIL, name: str = "unittest",
                 callbacks: dict[str, Any] | None = None, **kw: Any) -> L.Registration:
    return L.Registration(
        name=name,
        callbacks=dict(Milter.glue_callbacks() if callbacks is None else callbacks),
        registered=True, exception_policy=policy, **kw)


class Mta:
    """Plays the MTA against one :class:`Context`; records every byte sent back."""

    def __init__(self, reg: L.Registration | None = None) -> None:
        self.out: list[bytes] = []
        self.sent_after_end = 0
        self.ctx = Context(reg if reg is not None else registration(), self._send, "unit")

    def _send(self, data: bytes) -> None:
        if self.ctx.closed:
            self.sent_after_end += 1
        self.out.append(bytes(data))

    def raw(self, *items: cmd.Command | bytes) -> bytes:
        """Feed the packets in one ``receive``; the bytes the milter answered."""
        start = len(self.out)
        self.ctx.receive(encode_all(items))
        return b"".join(self.out[start:])

    def send(self, *items: cmd.Command | bytes) -> list[R.Reply]:
        return decode_replies(self.raw(*items))

    def optneg(self, version: int = 6, actions: int = C.SMFI_CURR_ACTS,
               protocol: int = C.SMFI_CURR_PROT) -> R.OptNegReply:
        replies = self.send(cmd.OptNeg(version, actions, protocol))
        assert len(replies) == 1 and isinstance(replies[0], R.OptNegReply), replies
        return replies[0]

    def eof(self) -> None:
        self.ctx.connection_lost()


def inet(host: str = "client.example.net", ip: str = "192.0.2.1",
         port: int = 12345) -> cmd.Connect:
    return cmd.Connect(host.encode(), C.SMFIA_INET, port, ip)


def negotiated_session(app_protocol: int = 0, offer_protocol: int = C.SMFI_CURR_PROT,
                       actions: int = C.SMFI_CURR_ACTS, version: int = 6,
                       max_data_size: int = C.DEFAULT_MAX_DATA_SIZE) -> Session:
    """A session past OPTNEG whose application asked for ``app_protocol``."""
    session = Session(max_data_size)
    session.receive_data(cmd.OptNeg(version, actions, offer_protocol).encode())
    event = session.next_event()
    assert isinstance(event, cmd.OptNeg)
    offer = Offer.from_command(event)
    session.negotiated(settle(offer, C.SMFIS_CONTINUE, [offer.actions, app_protocol, 0, 0]))
    return session


Step = tuple[cmd.Command, bytes | None]


def drive(session: Session, data: bytes,
          result: Callable[[cmd.Command], int] = lambda _ev: C.SMFIS_CONTINUE) -> list[Step]:
    """Feed ``data``; answer each command that waits with ``result(event)``.

    Returns ``(event, reply bytes or None when no answer was due)`` pairs.
    """
    session.receive_data(data)
    steps: list[Step] = []
    while (event := session.next_event()) is not None:
        if session.awaiting is None:
            steps.append((event, None))
        elif isinstance(event, cmd.OptNeg):
            offer = Offer.from_command(event)
            steps.append((event, session.negotiated(
                settle(offer, C.SMFIS_CONTINUE, [offer.actions, 0, 0, 0]))))
        else:
            steps.append((event, session.respond(result(event))))
    return steps


def kinds(steps: Sequence[Step]) -> list[str]:
    return [type(ev).__name__ for ev, _ in steps]


# --- Hypothesis strategies ---------------------------------------------------------

cstr = st.binary(max_size=40).map(lambda b: b.replace(b"\0", b"x"))
cstr_nonempty = st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\0", b"x"))
u32 = st.integers(0, 0xFFFFFFFF)


def _connect() -> st.SearchStrategy[cmd.Connect]:
    v4 = st.builds(lambda host, port, ip: cmd.Connect(host, C.SMFIA_INET, port, str(ip)),
                   cstr, st.integers(0, 65535), st.ip_addresses(v=4))
    v6 = st.builds(
        lambda host, port, ip: cmd.Connect(host, C.SMFIA_INET6, port, _ntop6(ip)),
        cstr, st.integers(0, 65535), st.ip_addresses(v=6))
    unix = st.builds(lambda host, path: cmd.Connect(host, C.SMFIA_UNIX, 0, path),
                     cstr, st.text(st.characters(blacklist_characters="\0",
                                                 blacklist_categories=["Cs"]), max_size=30))
    unknown = st.builds(lambda host: cmd.Connect(host, C.SMFIA_UNKNOWN), cstr)
    return st.one_of(v4, v6, unix, unknown)


def _ntop6(ip: ipaddress.IPv6Address) -> str:
    # The canonical text a CONNECT parses to is glibc's inet_ntop form.
    import socket
    return socket.inet_ntop(socket.AF_INET6, ip.packed)


def _macro() -> st.SearchStrategy[cmd.Macro]:
    pairs = st.lists(st.tuples(cstr, cstr), max_size=5)
    odd = st.one_of(st.none(), cstr)

    def build(stage: int, ps: list[tuple[bytes, bytes]], last: bytes | None) -> cmd.Macro:
        all_pairs: list[tuple[bytes, bytes | None]] = list(ps)
        if last is not None:
            all_pairs.append((last, None))
        return cmd.Macro(stage, tuple(all_pairs))

    return st.builds(build, st.integers(0, 255), pairs, odd)


commands: st.SearchStrategy[cmd.Command] = st.one_of(
    st.builds(cmd.OptNeg, st.integers(2, 0xFFFFFFFF), u32, u32),
    _macro(),
    _connect(),
    st.builds(cmd.Helo, cstr),
    st.builds(lambda a: cmd.Mail(tuple(a)), st.lists(cstr, min_size=1, max_size=4)),
    st.builds(lambda a: cmd.Rcpt(tuple(a)), st.lists(cstr, min_size=1, max_size=4)),
    st.just(cmd.Data()),
    st.builds(cmd.Header, cstr_nonempty, cstr),
    st.just(cmd.EndOfHeaders()),
    st.builds(cmd.Body, st.binary(max_size=200)),
    st.builds(cmd.EndOfMessage, st.binary(max_size=50)),
    st.just(cmd.Abort()),
    st.just(cmd.Quit()),
    st.just(cmd.QuitNewConnection()),
    st.builds(cmd.Unknown, cstr),
)

verdict_codes = [C.SMFIR_CONTINUE, C.SMFIR_ACCEPT, C.SMFIR_REJECT, C.SMFIR_TEMPFAIL,
                 C.SMFIR_DISCARD, C.SMFIR_SKIP, C.SMFIR_PROGRESS, C.SMFIR_SHUTDOWN]
symlists = st.lists(st.tuples(u32, cstr), max_size=4).map(tuple)

replies: st.SearchStrategy[R.Reply] = st.one_of(
    st.sampled_from(verdict_codes).map(R.Verdict),
    st.builds(R.ReplyCode, cstr),
    st.builds(R.OptNegReply, u32, u32, u32, symlists),
    st.builds(R.AddHeader, cstr, cstr),
    st.builds(R.InsertHeader, u32, cstr, cstr),
    st.builds(R.ChangeHeader, u32, cstr, cstr),
    st.builds(R.AddRcpt, cstr),
    st.builds(R.AddRcptPar, cstr, st.one_of(st.none(), cstr)),
    st.builds(R.DelRcpt, cstr),
    st.builds(R.ChangeFrom, cstr, st.one_of(st.none(), cstr)),
    st.builds(R.ReplaceBody, st.binary(max_size=200)),
    st.builds(R.Quarantine, cstr),
)


@st.composite
def split_points(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at random places (possibly inside the length field)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    pieces = []
    prev = 0
    for cut in [*cuts, len(data)]:
        pieces.append(data[prev:cut])
        prev = cut
    return pieces
