"""The session state machine against PROTOCOL.md §6.2, macros (§3.5), reply
texts (§4.2), NR emulation (§5.4) and end-of-message rules (§4.1)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from Milter.protocol import commands as cmd
from Milter.protocol import constants as C
from Milter.protocol import replies as R
from Milter.protocol.errors import ActionNotAllowed, UsageError
from Milter.protocol.session import Session, State

from .helpers import PROPERTY, drive, encode_all, inet, kinds, negotiated_session

CONT, REJ, TEMP, ACC, DISC = (C.SMFIS_CONTINUE, C.SMFIS_REJECT, C.SMFIS_TEMPFAIL,
                              C.SMFIS_ACCEPT, C.SMFIS_DISCARD)

# --- the §6.2 table, transcribed from PROTOCOL.md --------------------------------------

ALLOWED: dict[str, set[str]] = {
    "INIT": {"OPTS"},
    "OPTS": {"CONN", "UNKN"},
    "CONN": {"HELO", "MAIL", "UNKN"},
    "HELO": {"HELO", "MAIL", "UNKN"},
    "MAIL": {"RCPT", "ABRT", "UNKN"},
    "RCPT": {"HDRS", "EOHS", "DATA", "BODY", "ENDM", "RCPT", "ABRT", "UNKN"},
    "DATA": {"EOHS", "HDRS", "ABRT"},
    "HDRS": {"EOHS", "HDRS", "ABRT"},
    "EOHS": {"BODY", "ENDM", "ABRT"},
    "BODY": {"ENDM", "BODY", "ABRT"},
    "ENDM": {"QUIT", "MAIL", "UNKN", "Q_NC"},
    "QUIT": set(),
    "ABRT": set(),
    "UNKN": {"HELO", "MAIL", "RCPT", "ABRT", "DATA", "BODY", "UNKN", "QUIT", "Q_NC"},
    "Q_NC": {"CONN", "UNKN"},
}
ORDER = ["INIT", "OPTS", "CONN", "HELO", "MAIL", "RCPT", "DATA", "HDRS", "EOHS", "BODY",
         "ENDM", "QUIT", "ABRT", "UNKN", "Q_NC"]
SKIPPABLE = {"CONN": C.SMFIP_NOCONNECT, "HELO": C.SMFIP_NOHELO, "MAIL": C.SMFIP_NOMAIL,
             "RCPT": C.SMFIP_NORCPT, "DATA": C.SMFIP_NODATA, "HDRS": C.SMFIP_NOHDRS,
             "EOHS": C.SMFIP_NOEOH, "BODY": C.SMFIP_NOBODY, "UNKN": C.SMFIP_NOUNKNOWN}
IN_TRANSACTION = {"MAIL", "RCPT", "DATA", "HDRS", "EOHS", "BODY"}
NO_BITS = 0x37F

COMMAND_FOR: dict[str, cmd.Command] = {
    "OPTS": cmd.OptNeg(6, 0x1FF, 0x1FFFFF),
    "CONN": inet(),
    "HELO": cmd.Helo(b"client.example.net"),
    "MAIL": cmd.Mail((b"<a@example.net>",)),
    "RCPT": cmd.Rcpt((b"<b@example.org>",)),
    "DATA": cmd.Data(),
    "HDRS": cmd.Header(b"Subject", b"hi"),
    "EOHS": cmd.EndOfHeaders(),
    "BODY": cmd.Body(b"x\r\n"),
    "ENDM": cmd.EndOfMessage(),
    "QUIT": cmd.Quit(),
    "ABRT": cmd.Abort(),
    "UNKN": cmd.Unknown(b"XFOO"),
    "Q_NC": cmd.QuitNewConnection(),
}


def reference_ok(old: str, new: str, no_bits: int) -> bool:
    """§6.2: allowed, or reachable by walking forward over skippable states."""
    s = old
    while True:
        if new in ALLOWED[s]:
            return True
        i = ORDER.index(s) + 1
        if i >= len(ORDER):
            return False
        nxt = ORDER[i]
        if not no_bits & SKIPPABLE.get(nxt, 0):
            return False
        s = nxt


def expected(old: str, new: str, no_bits: int) -> tuple[list[str], str]:
    """(events delivered, state afterwards) per §6.2's out-of-order rule."""
    name = type(COMMAND_FOR[new]).__name__
    if reference_ok(old, new, no_bits):
        return [name], new
    events = ["Abort"] if old in IN_TRANSACTION else []
    if reference_ok("HELO", new, no_bits):
        return [*events, name], new
    return events, "HELO"


def observe(old: str, new: str, no_bits: int) -> tuple[list[str], str]:
    session = negotiated_session(app_protocol=no_bits)
    session.state = State[old]
    steps = drive(session, COMMAND_FOR[new].encode())
    for event, reply in steps:
        if isinstance(event, cmd.Abort | cmd.Quit | cmd.QuitNewConnection):
            assert reply is None
        else:
            assert reply is not None
    return kinds(steps), session.state.name


SKIP_MASKS = [0, *SKIPPABLE.values(), 0x77F & NO_BITS, NO_BITS,
              C.SMFIP_NOHDRS | C.SMFIP_NOEOH, C.SMFIP_NOHELO | C.SMFIP_NOMAIL]


@pytest.mark.parametrize("no_bits", SKIP_MASKS, ids=[hex(m) for m in SKIP_MASKS])
def test_every_transition_matches_the_table(no_bits: int) -> None:
    wrong = []
    for old in ORDER:
        for new in COMMAND_FOR:
            want = expected(old, new, no_bits)
            got = observe(old, new, no_bits)
            if got != want:
                wrong.append(f"{old} -> {new}: got {got}, want {want}")
    assert wrong == []


@PROPERTY
@given(st.sampled_from(ORDER), st.lists(st.sampled_from(list(COMMAND_FOR)), max_size=12),
       st.integers(0, NO_BITS).map(lambda b: b & NO_BITS))
def test_command_sequences_match_the_table(start: str, news: list[str], no_bits: int) -> None:
    session = negotiated_session(app_protocol=no_bits)
    session.state = State[start]
    state = start
    for new in news:
        if session.ended:
            break
        want_events, state = expected(state, new, no_bits)
        assert kinds(drive(session, COMMAND_FOR[new].encode())) == want_events
        assert session.state.name == state
        if "OptNeg" in want_events:
            no_bits = 0  # drive() negotiates again, asking for nothing


def test_trace_b_out_of_order_mail_implies_abort() -> None:
    session = negotiated_session()
    drive(session, encode_all([inet(), cmd.Helo(b"h")]))
    steps = drive(session, encode_all([cmd.Mail((b"<a>",)), cmd.Rcpt((b"<b>",)),
                                       cmd.Mail((b"<c>",))]))
    assert [(type(ev).__name__, reply) for ev, reply in steps] == [
        ("Mail", R.CONTINUE.encode()), ("Rcpt", R.CONTINUE.encode()),
        ("Abort", None), ("Mail", R.CONTINUE.encode())]
    assert steps[3][0] == cmd.Mail((b"<c>",))
    assert session.state is State.MAIL


def test_trace_c_reject_at_rcpt_keeps_the_transaction() -> None:
    session = negotiated_session()
    drive(session, encode_all([inet(), cmd.Helo(b"h"), cmd.Mail((b"<a>",))]))
    steps = drive(session, cmd.Rcpt((b"<x>",)).encode(), lambda _e: REJ)
    assert steps[0][1] == R.REJECT.encode()
    assert session.state is State.RCPT and session.in_transaction
    steps = drive(session, encode_all([cmd.Rcpt((b"<y>",)), cmd.Data(), cmd.Header(b"a", b"b"),
                                       cmd.EndOfHeaders(), cmd.Body(b"x"),
                                       cmd.EndOfMessage()]))
    assert kinds(steps) == ["Rcpt", "Data", "Header", "EndOfHeaders", "Body", "EndOfMessage"]
    assert all(reply == R.CONTINUE.encode() for _e, reply in steps)


@pytest.mark.parametrize(("at", "result", "state"), [
    ("MAIL", REJ, "HELO"), ("MAIL", TEMP, "HELO"), ("MAIL", DISC, "HELO"), ("MAIL", ACC, "HELO"),
    ("RCPT", REJ, "RCPT"), ("RCPT", TEMP, "RCPT"), ("RCPT", DISC, "RCPT"), ("RCPT", ACC, "HELO"),
    ("UNKN", REJ, "UNKN"), ("UNKN", TEMP, "UNKN"), ("UNKN", ACC, "HELO"),
    ("DATA", REJ, "HELO"), ("HDRS", TEMP, "HELO"), ("EOHS", DISC, "HELO"), ("BODY", ACC, "HELO"),
    ("ENDM", ACC, "HELO"), ("ENDM", REJ, "HELO"), ("ENDM", CONT, "ENDM"),
    ("CONN", REJ, "HELO"), ("HELO", ACC, "HELO"), ("BODY", CONT, "BODY"),
])
def test_state_after_a_result(at: str, result: int, state: str) -> None:
    """§6.2: ACCEPT -> HELO; REJECT/TEMPFAIL/DISCARD -> HELO except at RCPT and UNKNOWN."""
    session = negotiated_session()
    before = {"CONN": "OPTS", "HELO": "CONN", "MAIL": "HELO", "RCPT": "MAIL", "DATA": "RCPT",
              "HDRS": "DATA", "EOHS": "HDRS", "BODY": "EOHS", "ENDM": "BODY", "UNKN": "HELO"}
    session.state = State[before[at]]
    steps = drive(session, COMMAND_FOR[at].encode(), lambda _e: result)
    assert len(steps) == 1
    assert session.state.name == state


def test_trace_a_postfix_eom_only_milter() -> None:
    """§10.1 A at the session level: 0x77F jumps OPTS -> ENDM; the ABORT after
    the message is legal via HELO -> (MAIL skipped) -> ABRT; QUIT via UNKN."""
    session = Session()
    session.receive_data(cmd.OptNeg(6, 0x1FF, 0x1FFFFF).encode())
    ev = session.next_event()
    assert isinstance(ev, cmd.OptNeg)
    from Milter.protocol.negotiation import Offer, settle
    session.negotiated(settle(Offer.from_command(ev), CONT, [0x1FF, 0x77F, 0, 0]))
    stream = encode_all([cmd.Macro(ord(c), ((b"i", b"Q1"),)) for c in "CHMRT"]
                        + [cmd.Macro(ord("E"), ((b"i", b"Q1"),)), cmd.EndOfMessage(),
                           cmd.Abort(), cmd.Quit()])
    steps = drive(session, stream, lambda _e: ACC)
    assert [(type(e).__name__, r) for e, r in steps] == [
        ("EndOfMessage", R.ACCEPT.encode()), ("Abort", None), ("Quit", None)]
    assert session.ended


def test_abort_outside_transaction_ignored_without_nomail() -> None:
    session = negotiated_session()
    drive(session, encode_all([inet(), cmd.Helo(b"h")]))
    assert drive(session, cmd.Abort().encode()) == []
    assert session.dropped == [C.SMFIC_ABORT]
    assert session.state is State.HELO


def test_abort_outside_transaction_runs_with_nomail() -> None:
    session = negotiated_session(app_protocol=C.SMFIP_NOMAIL)
    drive(session, encode_all([inet(), cmd.Helo(b"h")]))
    assert kinds(drive(session, cmd.Abort().encode())) == ["Abort"]
    assert session.state is State.ABRT


def test_abort_after_complete_message_postfix_style() -> None:
    session = negotiated_session()
    drive(session, encode_all([inet(), cmd.Helo(b"h"), cmd.Mail((b"<a>",)), cmd.Rcpt((b"<b>",)),
                               cmd.EndOfMessage()]))
    assert drive(session, cmd.Abort().encode()) == []
    # The next message still works.
    assert kinds(drive(session, cmd.Mail((b"<c>",)).encode())) == ["Mail"]


def test_quit_after_helo_is_ignored() -> None:
    session = negotiated_session()
    drive(session, encode_all([inet(), cmd.Helo(b"h")]))
    assert drive(session, cmd.Quit().encode()) == []
    assert not session.ended
    assert session.dropped == [C.SMFIC_QUIT]
    session.receive_eof()
    assert session.ended


def test_quit_after_message_ends_the_session() -> None:
    session = negotiated_session()
    steps = drive(session, encode_all([inet(), cmd.Helo(b"h"), cmd.Mail((b"<a>",)),
                                       cmd.Rcpt((b"<b>",)), cmd.EndOfMessage(), cmd.Quit(),
                                       cmd.Helo(b"ignored after quit")]))
    assert kinds(steps)[-1] == "Quit"
    assert session.ended
    assert session.next_event() is None


def test_helo_after_endm_and_repeated_helo() -> None:
    session = negotiated_session()
    steps = drive(session, encode_all([inet(), cmd.Helo(b"a"), cmd.Helo(b"b"),
                                       cmd.Mail((b"<a>",)), cmd.Rcpt((b"<b>",)),
                                       cmd.EndOfMessage(), cmd.Helo(b"c")]))
    assert kinds(steps) == ["Connect", "Helo", "Helo", "Mail", "Rcpt", "EndOfMessage", "Helo"]


def test_optneg_again_is_ignored() -> None:
    session = negotiated_session()
    drive(session, encode_all([inet(), cmd.Helo(b"a")]))
    assert drive(session, cmd.OptNeg(6, 0x1FF, 0x1FFFFF).encode()) == []
    assert session.dropped == [C.SMFIC_OPTNEG]


def test_quit_nc_then_new_connect() -> None:
    session = negotiated_session()
    drive(session, encode_all([inet(), cmd.Helo(b"a"), cmd.Mail((b"<a>",)), cmd.Rcpt((b"<b>",)),
                               cmd.EndOfMessage()]))
    steps = drive(session, encode_all([cmd.QuitNewConnection(), inet("second"),
                                       cmd.Helo(b"b")]))
    assert kinds(steps) == ["QuitNewConnection", "Connect", "Helo"]
    assert not session.ended


def test_protocol_misuse_raises_usage_errors() -> None:
    session = negotiated_session()
    with pytest.raises(UsageError):
        session.respond(CONT)  # nothing waits
    session.receive_data(inet().encode() + cmd.Helo(b"h").encode())
    assert isinstance(session.next_event(), cmd.Connect)
    with pytest.raises(UsageError):
        session.next_event()  # connect not answered yet
    with pytest.raises(UsageError):
        session.respond(5)  # not a result code
    with pytest.raises(UsageError):
        session.negotiated(negotiated_session().agreement)  # type: ignore[arg-type]
    assert session.respond(CONT) == R.CONTINUE.encode()
    assert isinstance(session.next_event(), cmd.Helo)


# --- macros (§3.5) ----------------------------------------------------------------------

def _macro(stage: str, *pairs: tuple[bytes, bytes | None]) -> bytes:
    return cmd.Macro(ord(stage), tuple(pairs)).encode()


def _at_helo() -> Session:
    session = negotiated_session()
    drive(session, _macro("C", (b"j", b"mx"), (b"{daemon_name}", b"smtpd")) + inet().encode()
          + _macro("H", (b"{tls_version}", b"TLSv1.3")) + cmd.Helo(b"h").encode())
    return session


def test_macros_by_stage_and_lookup() -> None:
    session = _at_helo()
    m = session.macros
    assert m.get(b"j") == b"mx"
    assert m.get(b"{daemon_name}") == b"smtpd"
    assert m.get(b"{tls_version}") == b"TLSv1.3"
    assert m.get(b"{nothing}") is None
    assert m.slot(0) == {b"j": b"mx", b"{daemon_name}": b"smtpd"}
    assert m.slot(1) == {b"{tls_version}": b"TLSv1.3"}


def test_single_letter_names_match_with_and_without_braces() -> None:
    session = negotiated_session()
    drive(session, _macro("C", (b"{j}", b"braced"), (b"_", b"bare")) + inet().encode())
    assert session.macros.get(b"j") == b"braced"
    assert session.macros.get(b"{j}") == b"braced"
    assert session.macros.get(b"{_}") == b"bare"
    # Longer names keep their braces: "daemon_name" is not "{daemon_name}".
    drive(session, _macro("H", (b"{daemon_name}", b"smtpd")) + cmd.Helo(b"h").encode())
    assert session.macros.get(b"daemon_name") is None
    assert session.macros.get(b"{daemon_name}") == b"smtpd"


def test_lookup_runs_from_eom_back_to_connect() -> None:
    session = negotiated_session()
    stream = b""
    for stage, command in (("C", inet()), ("H", cmd.Helo(b"h")), ("M", cmd.Mail((b"<a>",))),
                           ("R", cmd.Rcpt((b"<b>",))), ("T", cmd.Data()),
                           ("N", cmd.EndOfHeaders())):
        stream += _macro(stage, (b"i", stage.encode()), (b"{only_" + stage.encode() + b"}", b"y"))
        stream += command.encode()
    drive(session, stream)
    assert session.macros.get(b"i") == b"N"  # EOH is searched before DATA
    assert session.macros.get(b"{only_C}") == b"y"
    drive(session, _macro("E", (b"i", b"E")) + cmd.EndOfMessage().encode())
    assert session.macros.get(b"i") == b"E"  # EOM (slot 6) before EOH (slot 5)
    assert session.macros.slot(5) == {b"i": b"N", b"{only_N}": b"y"}
    assert session.macros.slot(6) == {b"i": b"E"}


def test_first_match_within_a_slot_and_odd_trailing_name() -> None:
    session = negotiated_session()
    drive(session, _macro("C", (b"j", b"first"), (b"{j}", b"second"), (b"v", None))
          + inet().encode())
    assert session.macros.get(b"j") == b"first"
    assert session.macros.get(b"v") is None


@pytest.mark.parametrize(("command", "cleared", "kept"), [
    ("C", ["H", "M", "R", "T", "N", "E"], ["C"]),
    ("H", ["M", "R", "T", "N", "E"], ["C", "H"]),
    ("M", ["R", "T", "N", "E"], ["C", "H", "M"]),
    ("R", ["T", "N", "E"], ["C", "H", "M", "R"]),
    ("T", [], ["C", "H", "M", "R", "T", "N", "E"]),
    ("N", [], ["C", "H", "M", "R", "T", "N", "E"]),
    ("E", [], ["C", "H", "M", "R", "T", "N", "E"]),
    ("A", [], ["C", "H", "M", "R", "T", "N", "E"]),
])
def test_commands_clear_later_stages(command: str, cleared: list[str], kept: list[str]) -> None:
    stages = "CHMRTNE"
    session = negotiated_session()
    # Fill every slot (the MACRO packets are stored whatever the state).
    drive(session, b"".join(_macro(s, (b"{m_" + s.encode() + b"}", b"v")) for s in stages))
    state = {"C": "OPTS", "H": "CONN", "M": "HELO", "R": "MAIL", "T": "RCPT", "N": "HDRS",
             "E": "BODY", "A": "RCPT"}[command]
    session.state = State[state]
    packets: dict[str, cmd.Command] = {"C": inet(), "H": cmd.Helo(b"h"), "M": cmd.Mail((b"<a>",)),
              "R": cmd.Rcpt((b"<b>",)), "T": cmd.Data(), "N": cmd.EndOfHeaders(),
              "E": cmd.EndOfMessage(), "A": cmd.Abort()}
    packet = packets[command].encode()
    steps = drive(session, packet)
    assert len(steps) == 1
    for s in cleared:
        assert session.macros.get(b"{m_" + s.encode() + b"}") is None, s
    for s in kept:
        assert session.macros.get(b"{m_" + s.encode() + b"}") == b"v", s


def test_optneg_clears_every_macro() -> None:
    session = Session()
    drive(session, _macro("C", (b"j", b"early")) + cmd.OptNeg(6, 0x1FF, 0x1FFFFF).encode())
    assert session.macros.get(b"j") is None


def test_quit_nc_clears_every_macro() -> None:
    session = negotiated_session()
    drive(session, _macro("C", (b"j", b"mx")) + encode_all(
        [inet(), cmd.Helo(b"h"), cmd.Mail((b"<a>",)), cmd.Rcpt((b"<b>",)),
         cmd.EndOfMessage(), cmd.QuitNewConnection()]))
    assert session.macros.get(b"j") is None


def test_empty_macro_list_and_unknown_stages_are_ignored() -> None:
    session = _at_helo()
    drive(session, _macro("C") + _macro("H"))
    assert session.macros.get(b"j") == b"mx"
    assert session.macros.get(b"{tls_version}") == b"TLSv1.3"
    for stage in "LBUZ\x00":
        drive(session, _macro(stage, (b"j", b"other"), (b"{x}", b"y")))
    assert session.macros.get(b"j") == b"mx"
    assert session.macros.get(b"{x}") is None


def test_macro_packet_replaces_its_slot() -> None:
    session = _at_helo()
    drive(session, _macro("C", (b"{daemon_name}", b"other")))
    assert session.macros.get(b"j") is None
    assert session.macros.get(b"{daemon_name}") == b"other"


def test_macros_for_a_skipped_command_are_stored() -> None:
    """§3.5: sent even when the command itself is skipped (P_NOMAIL)."""
    session = negotiated_session(app_protocol=C.SMFIP_NOMAIL)
    drive(session, encode_all([inet(), cmd.Helo(b"h")]))
    drive(session, _macro("M", (b"{mail_addr}", b"a@b")) + _macro("R", (b"i", b"Q"))
          + cmd.Rcpt((b"<b>",)).encode())
    assert session.macros.get(b"{mail_addr}") == b"a@b"
    assert session.macros.get(b"i") == b"Q"


def test_empty_value_is_defined() -> None:
    session = negotiated_session()
    drive(session, _macro("C", (b"{auth_type}", b"")))
    assert session.macros.get(b"{auth_type}") == b""


# --- REPLYCODE text (§4.2) ---------------------------------------------------------------

def _session_at_rcpt() -> Session:
    session = negotiated_session()
    drive(session, encode_all([inet(), cmd.Helo(b"h"), cmd.Mail((b"<a>",))]))
    return session


def _rcpt(session: Session, result: int) -> bytes:
    steps = drive(session, cmd.Rcpt((b"<b>",)).encode(), lambda _e: result)
    assert len(steps) == 1 and steps[0][1] is not None
    return steps[0][1]


def test_reply_text_used_only_on_matching_class_and_kept_until_sent() -> None:
    session = _session_at_rcpt()
    session.set_reply(b"550 5.7.1 no")
    assert _rcpt(session, TEMP) == R.TEMPFAIL.encode()  # 4xx result, 5xx text: kept
    assert _rcpt(session, CONT) == R.CONTINUE.encode()
    assert _rcpt(session, ACC) == R.ACCEPT.encode()  # ACCEPT does not use or clear it
    drive(session, cmd.Mail((b"<a2>",)).encode())  # a new message: still pending
    assert _rcpt(session, REJ) == R.ReplyCode(b"550 5.7.1 no").encode()
    assert _rcpt(session, REJ) == R.REJECT.encode()  # cleared once sent


def test_tempfail_text() -> None:
    session = _session_at_rcpt()
    session.set_reply(b"451 4.7.1 later")
    assert _rcpt(session, REJ) == R.REJECT.encode()
    assert _rcpt(session, TEMP) == R.ReplyCode(b"451 4.7.1 later").encode()
    assert _rcpt(session, TEMP) == R.TEMPFAIL.encode()


def test_reply_text_kept_for_the_connection() -> None:
    session = negotiated_session()
    drive(session, inet().encode())
    session.set_reply(b"550 5.7.1 set at connect")
    steps = drive(session, encode_all([cmd.Helo(b"h"), cmd.Mail((b"<a>",))]))
    assert [r for _e, r in steps] == [R.CONTINUE.encode()] * 2
    assert _rcpt(session, REJ) == R.ReplyCode(b"550 5.7.1 set at connect").encode()


def test_new_reply_text_replaces_the_old() -> None:
    session = _session_at_rcpt()
    session.set_reply(b"550 5.7.1 old")
    session.set_reply(b"550 5.7.1 new")
    assert _rcpt(session, REJ) == R.ReplyCode(b"550 5.7.1 new").encode()


# --- NR, SKIP, NOREPLY (§5.4, §6.3) --------------------------------------------------------

def test_nr_negotiated_with_mta_sends_nothing() -> None:
    session = negotiated_session(app_protocol=C.SMFIP_NR_HDR | C.SMFIP_NR_CONN)
    assert session.agreement is not None and session.agreement.mta_protocol & C.SMFIP_NR_HDR
    steps = drive(session, encode_all([inet(), cmd.Helo(b"h"), cmd.Mail((b"<a>",)),
                                       cmd.Rcpt((b"<b>",)), cmd.Header(b"a", b"b")]),
                  lambda _e: C.SMFIS_NOREPLY if not isinstance(_e, cmd.Helo) else CONT)
    assert [r for _e, r in steps] == [b"", R.CONTINUE.encode(), R.CONTINUE.encode(),
                                      R.CONTINUE.encode(), b""]


def test_nr_emulated_sends_continue_whatever_the_result() -> None:
    """The MTA did not offer NR: the app's promise is kept by faking 'c'; even a
    result that breaks the promise is not forwarded (libmilter)."""
    session = negotiated_session(app_protocol=C.SMFIP_NR_HDR | C.SMFIP_NR_CONN,
                                 offer_protocol=0x7F)
    assert session.agreement is not None and session.agreement.mta_protocol == 0
    for result in (C.SMFIS_NOREPLY, CONT, REJ):
        s = negotiated_session(app_protocol=C.SMFIP_NR_CONN, offer_protocol=0x7F)

        def answer(_e: cmd.Command, r: int = result) -> int:
            return r

        assert drive(s, inet().encode(), answer)[0][1] == R.CONTINUE.encode()
        assert s.state is State.CONN


def test_noreply_without_nr_still_answers() -> None:
    session = negotiated_session()
    steps = drive(session, inet().encode(), lambda _e: C.SMFIS_NOREPLY)
    assert steps[0][1] == R.CONTINUE.encode()


def test_skip_only_for_body_when_negotiated() -> None:
    session = negotiated_session(app_protocol=C.SMFIP_SKIP)
    drive(session, encode_all([inet(), cmd.Helo(b"h"), cmd.Mail((b"<a>",)),
                               cmd.Rcpt((b"<b>",)), cmd.EndOfHeaders()]))
    assert drive(session, cmd.Body(b"x").encode(), lambda _e: C.SMFIS_SKIP)[0][1] == \
        R.SKIP.encode()
    assert drive(session, cmd.EndOfMessage().encode(), lambda _e: C.SMFIS_SKIP)[0][1] == \
        R.CONTINUE.encode()
    plain = negotiated_session()
    drive(plain, encode_all([inet(), cmd.Helo(b"h"), cmd.Mail((b"<a>",)),
                             cmd.Rcpt((b"<b>",))]))
    assert drive(plain, cmd.Body(b"x").encode(), lambda _e: C.SMFIS_SKIP)[0][1] == \
        R.CONTINUE.encode()


# --- end of message --------------------------------------------------------------------------

def test_edits_only_while_eom_is_answered() -> None:
    session = negotiated_session(actions=C.SMFIF_ADDHDRS)
    mod = R.AddHeader(b"X-A", b"b")
    with pytest.raises(ActionNotAllowed):
        session.modification(mod)
    assert session.progress() == b""
    drive(session, encode_all([inet(), cmd.Helo(b"h"), cmd.Mail((b"<a>",)),
                               cmd.Rcpt((b"<b>",))]))
    session.receive_data(cmd.EndOfMessage().encode())
    assert isinstance(session.next_event(), cmd.EndOfMessage)
    assert session.in_eom
    assert session.modification(mod) == mod.encode()
    assert session.progress() == R.PROGRESS.encode()
    with pytest.raises(ActionNotAllowed):
        session.modification(R.AddRcpt(b"<x>"))  # ADDRCPT not negotiated
    assert session.respond(CONT) == R.CONTINUE.encode()
    assert not session.in_eom
    with pytest.raises(ActionNotAllowed):
        session.modification(mod)


def test_bodyeob_with_data_is_one_event() -> None:
    session = negotiated_session()
    drive(session, encode_all([inet(), cmd.Helo(b"h"), cmd.Mail((b"<a>",)),
                               cmd.Rcpt((b"<b>",))]))
    steps = drive(session, cmd.EndOfMessage(b"last chunk").encode())
    assert steps == [(cmd.EndOfMessage(b"last chunk"), R.CONTINUE.encode())]
