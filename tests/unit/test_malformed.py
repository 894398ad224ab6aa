"""Every malformed-input row of PROTOCOL.md §9 (and §6.2's "needs data" rule),
at the parser, the session and the context."""

from __future__ import annotations

import logging
import socket

import pytest

import Milter
from Milter.protocol import commands as cmd
from Milter.protocol import constants as C
from Milter.protocol import replies as R
from Milter.protocol.errors import (
    MalformedPacket,
    NegotiationRefused,
    PeerError,
    TruncatedStream,
    UnknownCommand,
)
from Milter.protocol.framing import encode_frame
from Milter.protocol.session import Session

from .helpers import (
    Mta,
    UseFactory,
    drive,
    encode_all,
    inet,
    kinds,
    negotiated_session,
    registration,
)


def frame(code: str, payload: bytes = b"") -> bytes:
    return encode_frame(ord(code), payload)


class Recorder(Milter.Base):
    """Records callback names; plain overrides, so every event is sent."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def connect(self, hostname: str, family: int, hostaddr: object) -> int:
        self.calls.append("connect")
        return Milter.CONTINUE

    def hello(self, hostname: str) -> int:
        self.calls.append(f"hello:{hostname}")
        return Milter.CONTINUE

    def envfrom(self, f: str, *params: str) -> int:
        self.calls.append(f"envfrom:{f}:{','.join(params)}")
        return Milter.CONTINUE

    def envrcpt(self, to: str, *params: str) -> int:
        self.calls.append(f"envrcpt:{to}")
        return Milter.CONTINUE

    def data(self) -> int:
        self.calls.append("data")
        return Milter.CONTINUE

    def header(self, field: str, value: str) -> int:
        self.calls.append(f"header:{field}:{value}")
        return Milter.CONTINUE

    def eoh(self) -> int:
        self.calls.append("eoh")
        return Milter.CONTINUE

    def body(self, blk: bytes) -> int:
        self.calls.append(f"body:{blk!r}")
        return Milter.CONTINUE

    def unknown(self, cmd: str) -> int:
        self.calls.append(f"unknown:{cmd}")
        return Milter.CONTINUE

    def eom(self) -> int:
        self.calls.append("eom")
        return Milter.CONTINUE

    def abort(self) -> int:
        self.calls.append("abort")
        return Milter.CONTINUE

    def close(self) -> int:
        self.calls.append("close")
        return Milter.CONTINUE


@pytest.fixture
def mta(use_factory: UseFactory) -> Mta:
    use_factory(Recorder)
    m = Mta()
    m.optneg()
    return m


def calls(m: Mta) -> list[str]:
    return m.ctx.getpriv().calls  # type: ignore[no-any-return]


IN_MAIL: list[cmd.Command] = [inet(), cmd.Helo(b"h"), cmd.Mail((b"<a>",)), cmd.Rcpt((b"<b>",))]


# --- stream level --------------------------------------------------------------------------

def test_eof_at_a_packet_boundary_outside_a_transaction(mta: Mta) -> None:
    mta.send(inet(), cmd.Helo(b"h"))
    mta.eof()
    assert calls(mta)[-1:] == ["close"] and "abort" not in calls(mta)
    assert mta.ctx.closed


def test_eof_inside_a_transaction_aborts_then_closes(mta: Mta) -> None:
    mta.send(*IN_MAIL)
    mta.eof()
    mta.eof()
    assert calls(mta)[-2:] == ["abort", "close"]
    assert calls(mta).count("close") == 1


def test_eof_inside_a_packet() -> None:
    session = negotiated_session()
    session.receive_data(inet().encode()[:7])
    assert session.next_event() is None
    with pytest.raises(TruncatedStream):
        session.receive_eof()
    assert session.ended


def test_zero_length_packet_ends_the_session(mta: Mta, caplog: pytest.LogCaptureFixture) -> None:
    mta.send(*IN_MAIL)
    with caplog.at_level(logging.WARNING, "Milter"):
        assert mta.raw(b"\0\0\0\0", frame("D", b"C")) == b""
    assert mta.ctx.closed
    assert calls(mta)[-2:] == ["abort", "close"]
    assert "length 0" in caplog.text


def test_oversized_packet_ends_the_session(use_factory: UseFactory) -> None:
    use_factory(Recorder)
    m = Mta(registration(max_data_size=70000))
    m.optneg()
    big = cmd.Header(b"X-Big", b"v" * 69990).encode()
    assert m.send(*IN_MAIL, big) == [R.CONTINUE] * 5  # 70000 bytes of data: accepted
    assert m.raw((70002).to_bytes(4, "big") + b"L") == b""  # refused from the length alone
    assert m.ctx.closed
    assert calls(m)[-2:] == ["abort", "close"]


def test_setmaxdatasize_refuses_below_libmilters_limit() -> None:
    with pytest.raises(Milter.error):
        Milter.setmaxdatasize(65534)


@pytest.mark.parametrize("code", [0x00, 0x1F, ord("Z"), ord("c"), ord("z"), 0xFF])
def test_unknown_command_byte(code: int, mta: Mta, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(UnknownCommand):
        cmd.parse_command(code, b"")
    mta.send(*IN_MAIL)
    with caplog.at_level(logging.WARNING, "Milter"):
        assert mta.raw(encode_frame(code, b"x")) == b""
    assert mta.ctx.closed
    assert calls(mta)[-2:] == ["abort", "close"]
    assert f"{code:#04x}" in caplog.text


# --- commands that need data (§6.2) ----------------------------------------------------------

@pytest.mark.parametrize("code", "CHMRLDOU")
def test_command_without_data_ends_the_session(code: str) -> None:
    with pytest.raises(PeerError):
        cmd.parse_command(ord(code), b"")


@pytest.mark.parametrize("code", "ANQTEK")
def test_commands_that_may_be_empty(code: str) -> None:
    cmd.parse_command(ord(code), b"")


def test_empty_body_is_tolerated(mta: Mta) -> None:
    assert mta.send(*IN_MAIL, frame("B")) == [R.CONTINUE] * 5
    assert calls(mta)[-1] == "body:b''"


# --- OPTNEG ----------------------------------------------------------------------------------

@pytest.mark.parametrize("payload", [b"", b"\0" * 11, b"\0\0\0\x01" + b"\0" * 8,
                                     b"\0\0\0\0" + b"\xff" * 8])
def test_bad_optneg_refused(payload: bytes) -> None:
    with pytest.raises(NegotiationRefused):
        cmd.parse_command(ord("O"), payload)


def test_optneg_not_first_is_ignored(mta: Mta) -> None:
    assert mta.send(inet(), cmd.OptNeg(6, 0x1FF, 0x1FFFFF), cmd.Helo(b"h")) == [R.CONTINUE] * 2
    assert calls(mta) == ["connect", "hello:h"]


# --- CONNECT -----------------------------------------------------------------------------------

BAD_CONNECTS = [
    b"no-nul-at-all",
    b"host\0",  # no family
    b"host\x004",  # family, no port
    b"host\x004\0\x19",  # port, no address
    b"host\x004\0\x19192.0.2.1",  # address not NUL-terminated
    b"host\x004\0\x19not-an-ip\0",
    b"host\x004\0\x19192.0.2.256\0",
    b"host\x004\0\x19\0",  # empty address
    b"host\x006\0\x19IPv6:2001:db8::g\0",
    b"host\x006\0\x192001:db8::1%eth0\0",  # inet_pton takes no scope
    b"host\x006\0\x19192.0.2.1\0",
    b"host\x00X\0\x19192.0.2.1\0",  # unknown family
    b"host\x00L\0\0" + b"/" * 108 + b"\0",  # longer than sun_path
    b"host\x004\0\x19192.0.2.1\0trailing",  # last byte is not NUL
]


@pytest.mark.parametrize("payload", BAD_CONNECTS)
def test_malformed_connect(payload: bytes, mta: Mta) -> None:
    with pytest.raises(MalformedPacket):
        cmd.parse_command(ord("C"), payload)
    assert mta.raw(frame("C", payload)) == b""
    assert mta.ctx.closed
    assert calls(mta) == ["close"]


@pytest.mark.parametrize(("address", "canonical"), [
    ("IPv6:2001:DB8::1", "2001:db8::1"),
    ("ipv6:2001:db8:0:0:0:0:0:1", "2001:db8::1"),
    ("IPV6:::1", "::1"),
    ("2001:db8::1", "2001:db8::1"),
    ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),  # glibc inet_ntop keeps the dotted quad
    ("::192.0.2.1", "::192.0.2.1"),
    ("0:0:0:0:0:0:0:2", "::2"),
])
def test_ipv6_prefix_and_canonical_text(address: str, canonical: str, mta: Mta) -> None:
    payload = b"h\x006\0\x19" + address.encode() + b"\0"
    parsed = cmd.parse_command(ord("C"), payload)
    assert isinstance(parsed, cmd.Connect)
    assert parsed.address == canonical
    assert canonical == socket.inet_ntop(socket.AF_INET6,
                                         socket.inet_pton(socket.AF_INET6, address[5:]
                                                          if address[:5].lower() == "ipv6:"
                                                          else address))


def test_unix_path_with_8bit_bytes() -> None:
    parsed = cmd.parse_command(ord("C"), b"localhost\0L\0\0/tmp/\xe9\0")
    assert isinstance(parsed, cmd.Connect)
    assert parsed.address == "/tmp/\udce9"


# --- HELO / MAIL / RCPT / HEADER / UNKNOWN -----------------------------------------------------

def test_helo_without_nul_takes_what_is_there(mta: Mta) -> None:
    assert mta.send(inet(), frame("H", b"no-nul")) == [R.CONTINUE] * 2
    assert calls(mta)[-1] == "hello:no-nul"
    assert cmd.parse_command(ord("H"), b"a\0b\0") == cmd.Helo(b"a")


def test_mail_without_nul_ends_the_session(mta: Mta) -> None:
    mta.send(inet(), cmd.Helo(b"h"))
    assert mta.raw(frame("M", b"<a@b>")) == b""
    assert mta.ctx.closed
    assert calls(mta)[-1] == "close"


def test_rcpt_without_nul_ends_the_session_and_aborts(mta: Mta) -> None:
    mta.send(inet(), cmd.Helo(b"h"), cmd.Mail((b"<a>",)))
    assert mta.raw(frame("R", b"<b>")) == b""
    assert calls(mta)[-2:] == ["abort", "close"]


def test_bytes_after_the_last_nul_are_dropped(mta: Mta) -> None:
    assert cmd.parse_command(ord("M"), b"<a>\0SIZE=1\0junk") == cmd.Mail((b"<a>", b"SIZE=1"))
    assert cmd.parse_command(ord("R"), b"<b>\0junk") == cmd.Rcpt((b"<b>",))
    mta.send(inet(), cmd.Helo(b"h"), frame("M", b"<a>\0SIZE=1\0junk"))
    assert calls(mta)[-1] == "envfrom:<a>:SIZE=1"


@pytest.mark.parametrize("payload", [b"Subject", b"Subject\0value", b"\0value\0",
                                     b"Subject\0", b"\0"])
def test_malformed_header(payload: bytes, mta: Mta) -> None:
    with pytest.raises(MalformedPacket):
        cmd.parse_command(ord("L"), payload)
    mta.send(*IN_MAIL)
    assert mta.raw(frame("L", payload)) == b""
    assert calls(mta)[-2:] == ["abort", "close"]


def test_header_with_empty_value_is_fine() -> None:
    assert cmd.parse_command(ord("L"), b"X-Empty\0\0") == cmd.Header(b"X-Empty", b"")


def test_unknown_without_nul_takes_the_whole_payload(mta: Mta) -> None:
    assert mta.send(inet(), frame("U", b"XFOO bar")) == [R.CONTINUE] * 2
    assert calls(mta)[-1] == "unknown:XFOO bar"


# --- MACRO -------------------------------------------------------------------------------------

def test_macro_rows() -> None:
    session = negotiated_session()
    drive(session, frame("D", b"Cj\0mx\0") + inet().encode())
    drive(session, frame("D", b"C"))  # empty list: ignored
    drive(session, frame("D", b"Qj\0other\0"))  # unknown stage: ignored
    assert session.macros.get(b"j") == b"mx"
    drive(session, frame("D", b"Hv\0"))  # odd number of strings: v has no value
    assert session.macros.get(b"v") is None
    with pytest.raises(MalformedPacket):
        drive(session, frame("D"))


# --- extra data, BODYEOB data ----------------------------------------------------------------

def test_extra_data_on_data_eoh_abort_quit_is_ignored(mta: Mta) -> None:
    out = mta.send(*IN_MAIL, frame("T", b"junk"), frame("N", b"junk"), frame("A", b"junk"))
    assert out == [R.CONTINUE] * 6
    assert calls(mta)[-3:] == ["data", "eoh", "abort"]
    mta.send(cmd.Mail((b"<a>",)), cmd.Rcpt((b"<b>",)), cmd.EndOfMessage())
    mta.raw(frame("Q", b"junk"))
    assert mta.ctx.closed and calls(mta)[-1] == "close"


def test_bodyeob_with_data_calls_body_then_eom_and_replies_once(mta: Mta) -> None:
    assert mta.send(*IN_MAIL, cmd.EndOfMessage(b"tail")) == [R.CONTINUE] * 5
    assert calls(mta)[-2:] == ["body:b'tail'", "eom"]


def test_bodyeob_data_rejected_by_body_skips_eom(use_factory: UseFactory) -> None:
    class BodyRejects(Recorder):
        def body(self, blk: bytes) -> int:
            super().body(blk)
            return Milter.REJECT

    use_factory(BodyRejects)
    m = Mta()
    m.optneg()
    assert m.send(*IN_MAIL, cmd.EndOfMessage(b"tail")) == [R.CONTINUE] * 4 + [R.REJECT]
    assert calls(m)[-1] == "body:b'tail'"


# --- non-UTF-8 ---------------------------------------------------------------------------------

def test_8bit_strings_reach_callbacks_with_surrogateescape(mta: Mta) -> None:
    """README deviation: surrogateescape everywhere instead of a strict decode."""
    out = mta.send(cmd.Connect(b"h\xe9st", C.SMFIA_INET, 25, "192.0.2.1"), cmd.Helo(b"h\xe9lo"),
                   cmd.Unknown(b"X\xff"), cmd.Mail((b"<\xe9@b>",)), cmd.Rcpt((b"<b>",)),
                   cmd.Header(b"X-\xe9", b"v\xe9"))
    assert out == [R.CONTINUE] * 6
    assert calls(mta)[1:] == ["hello:h\udce9lo", "unknown:X\udcff", "envfrom:<\udce9@b>:",
                              "envrcpt:<b>", "header:X-\udce9:v\udce9"]


# --- out of order -------------------------------------------------------------------------------

def test_malformed_out_of_order_command_inside_a_transaction_still_aborts(mta: Mta) -> None:
    """A MAIL without NUL arriving mid-transaction: the session ends, and the
    open transaction is aborted before close (§6.1, §9)."""
    mta.send(*IN_MAIL)
    assert mta.raw(frame("M", b"<no-nul>")) == b""
    assert mta.ctx.closed
    assert calls(mta)[-2:] == ["abort", "close"]
    assert calls(mta).count("abort") == 1


def test_out_of_order_commands_are_logged_and_dropped(mta: Mta,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, "Milter"):
        assert mta.send(inet(), cmd.EndOfHeaders(), cmd.Body(b"x"), cmd.Helo(b"h")) == \
            [R.CONTINUE] * 2
    assert calls(mta) == ["connect", "hello:h"]
    assert "'N'" in caplog.text and "'B'" in caplog.text


def test_session_before_negotiation_drops_connect() -> None:
    """No OPTNEG: INIT -> CONN is not allowed, nor HELO -> CONN (libmilter)."""
    session = Session()
    assert drive(session, inet().encode()) == []
    assert kinds(drive(session, encode_all([cmd.Helo(b"h")]))) == ["Helo"]
