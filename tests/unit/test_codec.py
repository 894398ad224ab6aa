"""Framing, command and reply codec against PROTOCOL.md §10, plus round trips
and split-independence of the decoders (§2)."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

import Milter
from Milter.protocol import commands as cmd
from Milter.protocol import constants as C
from Milter.protocol import replies as R
from Milter.protocol.errors import MalformedPacket, OversizedPacket, TruncatedStream
from Milter.protocol.framing import FrameDecoder, encode_frame
from Milter.protocol.session import Session

from .helpers import (
    PROPERTY,
    Mta,
    UseFactory,
    commands,
    decode_replies,
    drive,
    factory_as,
    h,
    replies,
    split_points,
)

# --- §10 MTA -> milter ---------------------------------------------------------------

OPTNEG = h("00 00 00 0d 4f 00 00 00 06 00 00 01 ff 00 1f ff ff")
MACRO_CONNECT = h("""00 00 00 27 44 43 6a 00 6d 78 2e 65 78 61 6d 70 6c 65 2e 6f 72 67 00
7b 64 61 65 6d 6f 6e 5f 6e 61 6d 65 7d 00 73 6d 74 70 64 00""")
CONNECT_V4 = h("""00 00 00 21 43 63 6c 69 65 6e 74 2e 65 78 61 6d 70 6c 65 2e 6e 65 74 00
34 30 39 31 39 32 2e 30 2e 32 2e 31 00""")
CONNECT_V6 = h("""00 00 00 28 43 5b 49 50 76 36 3a 32 30 30 31 3a 64 62 38 3a 3a 31 5d 00
36 00 19 49 50 76 36 3a 32 30 30 31 3a 64 62 38 3a 3a 31 00""")
CONNECT_UNKNOWN = h("00 00 00 0c 43 6c 6f 63 61 6c 68 6f 73 74 00 55")
CONNECT_UNIX = h("""00 00 00 1c 43 6c 6f 63 61 6c 68 6f 73 74 00 4c 00 00 2f 76 61 72 2f 72
75 6e 2f 73 6f 63 6b 00""")
HELO = h("00 00 00 14 48 63 6c 69 65 6e 74 2e 65 78 61 6d 70 6c 65 2e 6e 65 74 00")
MAIL = h("""00 00 00 2d 4d 3c 61 6c 69 63 65 40 65 78 61 6d 70 6c 65 2e 6e 65 74 3e 00
53 49 5a 45 3d 31 32 33 34 00 42 4f 44 59 3d 38 42 49 54 4d 49 4d 45 00""")
RCPT = h("00 00 00 13 52 3c 62 6f 62 40 65 78 61 6d 70 6c 65 2e 6f 72 67 3e 00")
DATA = h("00 00 00 01 54")
HEADER = h("00 00 00 15 4c 53 75 62 6a 65 63 74 00 48 65 6c 6c 6f 20 77 6f 72 6c 64 00")
HEADER_FOLDED = h("""00 00 00 1b 4c 58 2d 4c 6f 6e 67 00 70 61 72 74 20 6f 6e 65 0a 09 70 61
72 74 20 74 77 6f 00""")
EOH = h("00 00 00 01 4e")
BODY = h("00 00 00 0a 42 48 69 20 42 6f 62 2e 0d 0a")
BODYEOB = h("00 00 00 01 45")
ABORT = h("00 00 00 01 41")
QUIT = h("00 00 00 01 51")
UNKNOWN = h("00 00 00 0a 55 58 46 4f 4f 20 62 61 72 00")

COMMAND_VECTORS: list[tuple[str, bytes, cmd.Command]] = [
    ("optneg", OPTNEG, cmd.OptNeg(6, 0x1FF, 0x1FFFFF)),
    ("macro", MACRO_CONNECT,
     cmd.Macro(ord("C"), ((b"j", b"mx.example.org"), (b"{daemon_name}", b"smtpd")))),
    ("connect-v4", CONNECT_V4, cmd.Connect(b"client.example.net", ord("4"), 12345, "192.0.2.1")),
    ("connect-v6", CONNECT_V6, cmd.Connect(b"[IPv6:2001:db8::1]", ord("6"), 25, "2001:db8::1")),
    ("connect-unknown", CONNECT_UNKNOWN, cmd.Connect(b"localhost", ord("U"))),
    ("connect-unix", CONNECT_UNIX, cmd.Connect(b"localhost", ord("L"), 0, "/var/run/sock")),
    ("helo", HELO, cmd.Helo(b"client.example.net")),
    ("mail", MAIL, cmd.Mail((b"<alice@example.net>", b"SIZE=1234", b"BODY=8BITMIME"))),
    ("rcpt", RCPT, cmd.Rcpt((b"<bob@example.org>",))),
    ("data", DATA, cmd.Data()),
    ("header", HEADER, cmd.Header(b"Subject", b"Hello world")),
    ("header-folded", HEADER_FOLDED, cmd.Header(b"X-Long", b"part one\n\tpart two")),
    ("eoh", EOH, cmd.EndOfHeaders()),
    ("body", BODY, cmd.Body(b"Hi Bob.\r\n")),
    ("bodyeob", BODYEOB, cmd.EndOfMessage()),
    ("abort", ABORT, cmd.Abort()),
    ("quit", QUIT, cmd.Quit()),
    ("unknown", UNKNOWN, cmd.Unknown(b"XFOO bar")),
]


def _one_frame(data: bytes) -> tuple[int, bytes]:
    decoder = FrameDecoder()
    decoder.feed(data)
    frame = decoder.next_frame()
    assert frame is not None
    assert decoder.next_frame() is None
    assert decoder.buffered == 0
    return frame


@pytest.mark.parametrize(("name", "wire", "expected"), COMMAND_VECTORS,
                         ids=[v[0] for v in COMMAND_VECTORS])
def test_command_vector_parses(name: str, wire: bytes, expected: cmd.Command) -> None:
    assert cmd.parse_command(*_one_frame(wire)) == expected


@pytest.mark.parametrize(("name", "wire", "expected"), COMMAND_VECTORS,
                         ids=[v[0] for v in COMMAND_VECTORS])
def test_command_vector_encodes(name: str, wire: bytes, expected: cmd.Command) -> None:
    if name == "connect-v6":
        # Parsing drops sendmail's "IPv6:" prefix; the encoder sends what it is given.
        assert expected.encode() != wire
        expected = cmd.Connect(b"[IPv6:2001:db8::1]", ord("6"), 25, "IPv6:2001:db8::1")
    assert expected.encode() == wire


class _Seen(Milter.Base):
    """Records the pymilter-level arguments of each callback."""

    seen: list[tuple[str, tuple[object, ...]]]

    def __init__(self) -> None:
        self.seen = []

    def connect(self, hostname: str, family: int, hostaddr: object) -> int:
        self.seen.append(("connect", (hostname, family, hostaddr)))
        return Milter.CONTINUE

    def hello(self, hostname: str) -> int:
        self.seen.append(("hello", (hostname,)))
        return Milter.CONTINUE

    def envfrom(self, f: str, *params: str) -> int:
        self.seen.append(("envfrom", (f, *params)))
        return Milter.CONTINUE

    def envrcpt(self, to: str, *params: str) -> int:
        self.seen.append(("envrcpt", (to, *params)))
        return Milter.CONTINUE

    def header(self, field: str, value: str) -> int:
        self.seen.append(("header", (field, value)))
        return Milter.CONTINUE

    def body(self, blk: bytes) -> int:
        self.seen.append(("body", (blk,)))
        return Milter.CONTINUE

    def unknown(self, cmd: str) -> int:
        self.seen.append(("unknown", (cmd,)))
        return Milter.CONTINUE


@pytest.mark.parametrize(("wire", "expected"), [
    (CONNECT_V4, ("client.example.net", socket.AF_INET, ("192.0.2.1", 12345))),
    (CONNECT_V6, ("[IPv6:2001:db8::1]", socket.AF_INET6, ("2001:db8::1", 25, 0, 0))),
    (CONNECT_UNKNOWN, ("localhost", 0, None)),
    (CONNECT_UNIX, ("localhost", socket.AF_UNIX, "/var/run/sock")),
], ids=["v4", "v6", "unknown", "unix"])
def test_connect_vectors_reach_pymilter_connect(use_factory: UseFactory, wire: bytes,
                                                expected: tuple[object, ...]) -> None:
    use_factory(_Seen)
    mta = Mta()
    mta.optneg()
    assert mta.send(wire) == [R.CONTINUE]
    milter = mta.ctx.getpriv()
    assert milter.seen == [("connect", expected)]


def test_session_vectors_reach_pymilter_callbacks(use_factory: UseFactory) -> None:
    use_factory(_Seen)
    mta = Mta()
    mta.optneg()
    out = mta.send(MACRO_CONNECT, CONNECT_V4, HELO, MAIL, RCPT, DATA, HEADER, HEADER_FOLDED,
                   EOH, BODY, UNKNOWN)
    # DATA and EOH are not overridden: Base's @nocallback asked the MTA not to
    # send them, but a sent one is still answered.
    assert out == [R.CONTINUE] * 10
    milter = mta.ctx.getpriv()
    assert milter.seen == [
        ("connect", ("client.example.net", socket.AF_INET, ("192.0.2.1", 12345))),
        ("hello", ("client.example.net",)),
        ("envfrom", ("<alice@example.net>", "SIZE=1234", "BODY=8BITMIME")),
        ("envrcpt", ("<bob@example.org>",)),
        ("header", ("Subject", "Hello world")),
        ("header", ("X-Long", "part one\n\tpart two")),
        ("body", (b"Hi Bob.\r\n",)),
        ("unknown", ("XFOO bar",)),
    ]
    assert mta.ctx.getsymval("j") == "mx.example.org"
    assert mta.ctx.getsymval("{daemon_name}") == "smtpd"


# --- §10 milter -> MTA ---------------------------------------------------------------

REPLY_VECTORS: list[tuple[str, R.Reply, bytes]] = [
    ("optneg-0x77f", R.OptNegReply(6, 0x1FF, 0x77F),
     h("00 00 00 0d 4f 00 00 00 06 00 00 01 ff 00 00 07 7f")),
    ("optneg-symlist", R.OptNegReply(6, 0x1FF, 0x400, ((2, b"{auth_authen} i"), (0, b"j"))),
     h("""00 00 00 27 4f 00 00 00 06 00 00 01 ff 00 00 04 00
     00 00 00 02 7b 61 75 74 68 5f 61 75 74 68 65 6e 7d 20 69 00
     00 00 00 00 6a 00""")),
    ("continue", R.CONTINUE, h("00 00 00 01 63")),
    ("accept", R.ACCEPT, h("00 00 00 01 61")),
    ("reject", R.REJECT, h("00 00 00 01 72")),
    ("tempfail", R.TEMPFAIL, h("00 00 00 01 74")),
    ("discard", R.DISCARD, h("00 00 00 01 64")),
    ("skip", R.SKIP, h("00 00 00 01 73")),
    ("progress", R.PROGRESS, h("00 00 00 01 70")),
    ("replycode", R.ReplyCode(b"550 5.7.1 Go away"),
     h("00 00 00 13 79 35 35 30 20 35 2e 37 2e 31 20 47 6f 20 61 77 61 79 00")),
    ("replycode-multi", R.ReplyCode(b"550-5.7.1 line one\r\n550 5.7.1 line two"),
     h("""00 00 00 28 79 35 35 30 2d 35 2e 37 2e 31 20 6c 69 6e 65 20 6f 6e 65 0d 0a
     35 35 30 20 35 2e 37 2e 31 20 6c 69 6e 65 20 74 77 6f 00""")),
    ("addheader", R.AddHeader(b"X-Scanned", b"yes"),
     h("00 00 00 0f 68 58 2d 53 63 61 6e 6e 65 64 00 79 65 73 00")),
    ("insheader", R.InsertHeader(0, b"X-First", b"top"),
     h("00 00 00 11 69 00 00 00 00 58 2d 46 69 72 73 74 00 74 6f 70 00")),
    ("chgheader-delete", R.ChangeHeader(1, b"Subject", b""),
     h("00 00 00 0e 6d 00 00 00 01 53 75 62 6a 65 63 74 00 00")),
    ("addrcpt", R.AddRcpt(b"<spy@example.com>"),
     h("00 00 00 13 2b 3c 73 70 79 40 65 78 61 6d 70 6c 65 2e 63 6f 6d 3e 00")),
    ("addrcpt-par", R.AddRcptPar(b"<spy@example.com>", b"NOTIFY=NEVER"),
     h("""00 00 00 20 32 3c 73 70 79 40 65 78 61 6d 70 6c 65 2e 63 6f 6d 3e 00
     4e 4f 54 49 46 59 3d 4e 45 56 45 52 00""")),
    ("delrcpt", R.DelRcpt(b"<bob@example.org>"),
     h("00 00 00 13 2d 3c 62 6f 62 40 65 78 61 6d 70 6c 65 2e 6f 72 67 3e 00")),
    ("chgfrom", R.ChangeFrom(b"<new@example.net>"),
     h("00 00 00 13 65 3c 6e 65 77 40 65 78 61 6d 70 6c 65 2e 6e 65 74 3e 00")),
    ("quarantine", R.Quarantine(b"suspicious"),
     h("00 00 00 0c 71 73 75 73 70 69 63 69 6f 75 73 00")),
    ("replbody", R.ReplaceBody(b"new body\r\n"),
     h("00 00 00 0b 62 6e 65 77 20 62 6f 64 79 0d 0a")),
]


@pytest.mark.parametrize(("name", "reply", "wire"), REPLY_VECTORS,
                         ids=[v[0] for v in REPLY_VECTORS])
def test_reply_vector_encodes(name: str, reply: R.Reply, wire: bytes) -> None:
    assert reply.encode() == wire


@pytest.mark.parametrize(("name", "reply", "wire"), REPLY_VECTORS,
                         ids=[v[0] for v in REPLY_VECTORS])
def test_reply_vector_parses(name: str, reply: R.Reply, wire: bytes) -> None:
    assert R.parse_reply(*_one_frame(wire)) == reply


class _EomOnly(Milter.Base):
    def eom(self) -> int:
        return Milter.ACCEPT


def test_optneg_reply_of_base_subclass_overriding_only_eom(use_factory: UseFactory) -> None:
    """§10: what a pymilter Base subclass that overrides only eom() asks for."""
    use_factory(_EomOnly)
    mta = Mta()
    assert mta.raw(OPTNEG) == REPLY_VECTORS[0][2]


def test_replycode_vectors_come_from_setreply(use_factory: UseFactory) -> None:
    """setreply builds exactly the one-line and multi-line §10 texts."""

    class Rejector(Milter.Base):
        def envfrom(self, f: str, *params: str) -> int:
            if f == "<alice@example.net>":
                self.setreply("550", "5.7.1", "Go away")
                return Milter.REJECT
            return Milter.CONTINUE

        def envrcpt(self, to: str, *params: str) -> int:
            self.setreply("550", "5.7.1", "line one", "line two")
            return Milter.REJECT

    use_factory(Rejector)
    mta = Mta()
    mta.optneg()
    assert mta.raw(MAIL) == REPLY_VECTORS[9][2]
    assert mta.send(cmd.Mail((b"<other@example.net>",))) == [R.CONTINUE]
    assert mta.raw(RCPT) == REPLY_VECTORS[10][2]


def test_edit_vectors_come_from_the_action_methods(use_factory: UseFactory) -> None:
    """addheader / insert / chgheader delete / addrcpt (+params) / delrcpt /
    chgfrom / quarantine / replacebody at EOM give the §10 packets, in call
    order, then the final reply."""

    class Editor(Milter.Base):
        def eom(self) -> int:
            self.addheader("X-Scanned", "yes")
            self.addheader("X-First", "top", 0)
            self.chgheader("Subject", 1, "")
            self.addrcpt("<spy@example.com>")
            self.addrcpt("<spy@example.com>", "NOTIFY=NEVER")
            self.delrcpt("<bob@example.org>")
            self.chgfrom("<new@example.net>")
            self.quarantine("suspicious")
            self.replacebody(b"new body\r\n")
            return Milter.CONTINUE

    use_factory(Editor)
    mta = Mta()
    mta.optneg()
    wire = mta.raw(BODYEOB)
    vectors = dict((name, packet) for name, _r, packet in REPLY_VECTORS)
    assert wire == b"".join(vectors[n] for n in (
        "addheader", "insheader", "chgheader-delete", "addrcpt", "addrcpt-par", "delrcpt",
        "chgfrom", "quarantine", "replbody", "continue"))


# --- round trips -------------------------------------------------------------------------

@PROPERTY
@given(commands)
def test_command_round_trip(command: cmd.Command) -> None:
    assert cmd.parse_command(*_one_frame(command.encode())) == command


@PROPERTY
@given(replies)
def test_reply_round_trip(reply: R.Reply) -> None:
    assert R.parse_reply(*_one_frame(reply.encode())) == reply


@PROPERTY
@given(st.integers(0, 255), st.binary(max_size=300))
def test_frame_round_trip(code: int, payload: bytes) -> None:
    wire = encode_frame(code, payload)
    assert int.from_bytes(wire[:4], "big") == len(payload) + 1
    assert _one_frame(wire) == (code, payload)


# --- split independence ----------------------------------------------------------------

def _frames(pieces: list[bytes], max_data_size: int = C.DEFAULT_MAX_DATA_SIZE,
            ) -> list[tuple[int, bytes]]:
    decoder = FrameDecoder(max_data_size)
    out = []
    for piece in pieces:
        decoder.feed(piece)
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
    decoder.check_eof()
    return out


ALL_COMMAND_WIRE = b"".join(v[1] for v in COMMAND_VECTORS)
ALL_REPLY_WIRE = b"".join(v[2] for v in REPLY_VECTORS)


@pytest.mark.parametrize("wire", [ALL_COMMAND_WIRE, ALL_REPLY_WIRE], ids=["commands", "replies"])
def test_frames_whole_equals_byte_by_byte(wire: bytes) -> None:
    whole = _frames([wire])
    assert len(whole) == (len(COMMAND_VECTORS) if wire is ALL_COMMAND_WIRE
                          else len(REPLY_VECTORS))
    assert _frames([wire[i:i + 1] for i in range(len(wire))]) == whole


@PROPERTY
@given(st.lists(commands, min_size=1, max_size=8), st.data())
def test_command_frames_at_random_splits(cmds: list[cmd.Command], data: st.DataObject) -> None:
    wire = b"".join(c.encode() for c in cmds)
    pieces = data.draw(split_points(wire))
    assert [cmd.parse_command(*f) for f in _frames(pieces)] == cmds


@PROPERTY
@given(st.lists(replies, min_size=1, max_size=8), st.data())
def test_reply_frames_at_random_splits(rs: list[R.Reply], data: st.DataObject) -> None:
    wire = b"".join(r.encode() for r in rs)
    pieces = data.draw(split_points(wire))
    assert [R.parse_reply(*f) for f in _frames(pieces)] == rs
    assert decode_replies(wire) == rs


# A complete session (§10 vectors, two messages) for the session-level checks.
SESSION_WIRE = (OPTNEG + MACRO_CONNECT + CONNECT_V4 + HELO + MAIL + RCPT + DATA + HEADER
                + HEADER_FOLDED + EOH + BODY + BODYEOB + ABORT + MAIL + RCPT + DATA + EOH
                + BODYEOB + UNKNOWN + QUIT)


def _session_events(pieces: list[bytes]) -> list[tuple[cmd.Command, bytes | None]]:
    session = Session()
    steps = []
    for piece in pieces:
        steps += drive(session, piece)
    return steps


def test_session_whole_byte_by_byte_and_split_agree() -> None:
    whole = _session_events([SESSION_WIRE])
    assert [type(ev).__name__ for ev, _ in whole] == [
        "OptNeg", "Connect", "Helo", "Mail", "Rcpt", "Data", "Header", "Header",
        "EndOfHeaders", "Body", "EndOfMessage", "Mail", "Rcpt", "Data", "EndOfHeaders",
        "EndOfMessage", "Unknown", "Quit"]  # ABORT after EOM is ignored (§6.2)
    assert _session_events([SESSION_WIRE[i:i + 1] for i in range(len(SESSION_WIRE))]) == whole


@PROPERTY
@given(st.data())
def test_session_events_do_not_depend_on_splits(data: st.DataObject) -> None:
    pieces = data.draw(split_points(SESSION_WIRE))
    assert _session_events(pieces) == _session_events([SESSION_WIRE])


@PROPERTY
@given(st.data())
def test_context_output_does_not_depend_on_splits(data: st.DataObject) -> None:
    pieces = data.draw(split_points(SESSION_WIRE))
    with factory_as(_Seen):
        whole = Mta()
        whole.raw(SESSION_WIRE)
        split = Mta()
        for piece in pieces:
            split.raw(piece)
    assert b"".join(split.out) == b"".join(whole.out)
    assert split.ctx.closed and whole.ctx.closed


# --- framing limits -------------------------------------------------------------------------

def test_length_counts_the_command_byte() -> None:
    assert encode_frame(ord("c")) == b"\0\0\0\x01c"
    assert encode_frame(ord("B"), b"xy") == b"\0\0\0\x03Bxy"


def test_zero_length_packet_is_malformed() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\0\0\0\0Q")
    with pytest.raises(MalformedPacket):
        decoder.next_frame()


@pytest.mark.parametrize("limit", [65535, 65536, 262143, C.DEFAULT_MAX_DATA_SIZE])
def test_oversized_limit_is_configurable(limit: int) -> None:
    ok = encode_frame(ord("B"), b"x" * limit)
    assert _frames([ok], limit) == [(ord("B"), b"x" * limit)]
    decoder = FrameDecoder(limit)
    # Refused from the length field alone, before any data arrived.
    decoder.feed((limit + 2).to_bytes(4, "big") + b"B")
    with pytest.raises(OversizedPacket):
        decoder.next_frame()


def test_default_limit_is_above_libmilters() -> None:
    assert C.DEFAULT_MAX_DATA_SIZE > 65535
    big = encode_frame(ord("L"), b"X-Big\0" + b"v" * 100_000 + b"\0")
    assert _frames([big]) == [(ord("L"), big[5:])]


def test_frame_decoder_waits_for_more() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"\0\0\0")
    assert decoder.next_frame() is None
    decoder.feed(b"\x03Bx")
    assert decoder.next_frame() is None
    assert decoder.buffered == 6
    with pytest.raises(TruncatedStream):
        decoder.check_eof()
    decoder.feed(b"y")
    assert decoder.next_frame() == (ord("B"), b"xy")
    decoder.check_eof()


def test_replbody_split_at_65535() -> None:
    body = bytes(range(256)) * 600  # 153600 bytes
    packets = R.replace_body_packets(body)
    assert [len(p) - 5 for p in packets] == [65535, 65535, 153600 - 2 * 65535]
    assert b"".join(p[5:] for p in packets) == body
    assert all(p[4] == ord("b") for p in packets)
    assert R.replace_body_packets(b"") == [b"\0\0\0\x01b"]
    assert R.replace_body_packets(b"x" * 65535) == [encode_frame(ord("b"), b"x" * 65535)]


def test_parse_reply_refuses_garbage() -> None:
    with pytest.raises(MalformedPacket):
        R.parse_reply(ord("c"), b"x")
    with pytest.raises(MalformedPacket):
        R.parse_reply(ord("y"), b"550 no nul")
    with pytest.raises(MalformedPacket):
        R.parse_reply(ord("Z"), b"")
    with pytest.raises(MalformedPacket):
        R.parse_reply(ord("O"), b"\0" * 11)
    with pytest.raises(MalformedPacket):
        R.parse_reply(ord("i"), b"\0\0\0\0a\0")
