"""Hostile input through the real ``bms`` daemon (issue 13): each case gets
its defined verdict over the real socket, never the 451 of an untrapped
exception, and the log stays one bounded line per event.

No DNS is needed: the clients are internal (no SPF)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from mtaclient import MtaClient
from testbed.bmsd import BmsDaemon

from Milter.protocol import commands as cmd
from Milter.protocol import constants as C
from Milter.protocol import replies as R

BASE = {
    "milter": {"internal_connect": "192.0.2.0/24", "internal_domains": "example.net"},
    "dns": {"nameservers": "127.0.0.1:9", "timeout": "0.5", "lifetime": "1"},
    "srs": {"secret": "socket-srs-secret", "fwdomain": "example.net"},
}
ACCESS = "SPF-Pass: OK\nSMTP-Auth:alice@outside.test OK\n"
NO_ADDHDRS = C.SMFI_CURR_ACTS & ~C.SMFIF_ADDHDRS


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[BmsDaemon]:
    with BmsDaemon(BASE, ACCESS, directory=str(tmp_path)) as d:
        yield d


def internal_mta(d: BmsDaemon, j: bytes = b"mx.example.test",
                 actions: int = C.SMFI_CURR_ACTS) -> MtaClient:
    client = MtaClient(("127.0.0.1", d.port))
    client.negotiate(actions=actions)
    reply = client.command(cmd.Connect(b"pc.example.net", C.SMFIA_INET, 4000, "192.0.2.7"),
                           [(b"j", j), (b"{daemon_name}", b"smtpd")])
    assert reply == R.CONTINUE, reply
    assert client.command(cmd.Helo(b"pc.example.net")) == R.CONTINUE
    return client


def transaction(m: MtaClient, sender: bytes, rcpt: bytes, user: bytes | None = None
                ) -> tuple[list[R.Reply], R.Reply]:
    """MAIL to end of message (bms asks for no replies to headers and body)."""
    macros = [(b"{auth_authen}", user)] if user else []
    assert m.command(cmd.Mail((sender,)), macros) == R.CONTINUE
    assert m.command(cmd.Rcpt((rcpt,))) == R.CONTINUE
    assert m.command(cmd.Data()) == R.CONTINUE
    m.send(cmd.Header(b"Subject", b"hi"))
    assert m.command(cmd.EndOfHeaders()) == R.CONTINUE
    m.send(cmd.Body(b"hi\r\n"), cmd.EndOfMessage())
    return m.final()


def no_tracebacks(d: BmsDaemon) -> None:
    text = d.log_file.read_text(errors="replace")
    assert "Traceback" not in text and "untrapped exception" not in text, text
    assert "edit refused" not in text, text


def test_zombie_domain_with_cr_lf_gets_550_with_the_domain_escaped(daemon: BmsDaemon) -> None:
    """Item 1: the 550 quotes the domain; CR/LF in it used to make the reply
    text invalid and the callback raise (451)."""
    with internal_mta(daemon) as m:
        reply = m.command(cmd.Mail((b"<pc@zom\r\nbie.example>",)), [(b"{auth_authen}", b"bob")])
    assert isinstance(reply, R.ReplyCode), reply
    assert reply.text.startswith(b"550-5.7.1 "), reply
    assert b"(zom\\r\\nbie.example)" in reply.text, reply
    daemon.stop()
    assert any("REJECT: zombie PC at 192.0.2.7 sending MAIL FROM pc@zom\\r\\nbie.example" in msg
               for msg in daemon.messages()), daemon.messages()
    no_tracebacks(daemon)


def test_cr_lf_in_the_j_macro_gives_a_normal_end_of_message(daemon: BmsDaemon) -> None:
    """Item 3: ``j`` goes into Authentication-Results as the authserv-id."""
    with internal_mta(daemon, j=b"mx.example.test\r\nX-Injected: yes") as m:
        edits, final = transaction(m, b"<alice@example.net>", b"<bob@example.net>")
    assert final == R.CONTINUE, final
    headers = [e for e in edits if isinstance(e, R.InsertHeader)]
    assert [h.name for h in headers] == [b"Authentication-Results"], edits
    assert headers[0].value.startswith(b"mx.example.test\\r\\nX-Injected:\\x20yes;"), headers
    daemon.stop()
    no_tracebacks(daemon)


@pytest.mark.parametrize("bad", [b"\x1b", b"\r", b"\n"], ids=["ESC", "CR", "LF"])
def test_srs_rewrite_of_a_sender_with_control_characters_is_refused(
        daemon: BmsDaemon, bad: bytes) -> None:
    """Item 4: the SRS0 sender would carry the character raw into the
    envelope (through Postfix: into Return-Path).  No CHGFROM; the message
    goes on with its own sender."""
    sender = b"<bad" + bad + b"guy@outside.test>"
    with internal_mta(daemon) as m:
        edits, final = transaction(m, sender, b"<carol@elsewhere.example>", b"alice")
    assert final == R.CONTINUE, final
    assert not any(isinstance(e, R.ChangeFrom) for e in edits), edits
    daemon.stop()
    escaped = bad.decode().encode("unicode_escape").decode()
    assert any(f"SRS: envelope sender bad{escaped}guy@outside.test not rewritten" in msg
               for msg in daemon.messages()), daemon.messages()
    no_tracebacks(daemon)


def test_srs_rewrite_of_a_clean_sender_still_happens(daemon: BmsDaemon) -> None:
    with internal_mta(daemon) as m:
        edits, final = transaction(m, b"<goodguy@outside.test>", b"<carol@elsewhere.example>",
                                   b"alice")
    assert final == R.CONTINUE
    changes = [e for e in edits if isinstance(e, R.ChangeFrom)]
    assert len(changes) == 1 and changes[0].sender.startswith(b"<SRS0="), edits
    assert changes[0].sender.endswith(b"@example.net>"), edits


def test_a_missing_action_is_said_once_and_its_edits_are_skipped(daemon: BmsDaemon) -> None:
    """Item 2: the MTA does not grant ADDHDRS.  One line at negotiation names
    the action and what it costs; each message gets its verdict and one line
    naming the edits skipped, never ACCEPT followed by a 451."""
    for _ in range(2):
        with internal_mta(daemon, actions=NO_ADDHDRS) as m:
            edits, final = transaction(m, b"<alice@example.net>", b"<bob@example.net>")
        assert final == R.CONTINUE, final
        assert not any(isinstance(e, R.InsertHeader) for e in edits), edits
    daemon.stop()
    messages = daemon.messages()
    told = [msg for msg in messages if msg.startswith("NEGOTIATION:")]
    assert len(told) == 1, told
    assert "does not grant ADDHDRS" in told[0] and "Authentication-Results" in told[0], told
    skips = [msg for msg in messages if msg.startswith("SKIPPED EDITS:")]
    assert skips == ["SKIPPED EDITS: add Authentication-Results (ADDHDRS not granted)"] * 2
    no_tracebacks(daemon)


def test_a_huge_bad_field_is_quoted_in_a_bounded_log_line(daemon: BmsDaemon) -> None:
    """Item 7: a protocol error quotes the bad field cut to a bound (one line
    was 141,112 characters)."""
    with MtaClient(("127.0.0.1", daemon.port)) as m:
        m.negotiate()
        m.send(cmd.Connect(b"host", C.SMFIA_INET, 25, "9" * 140_000))
        assert m.closed_by_milter()
    daemon.stop()
    errors = [msg for msg in daemon.messages() if "bad IPv4 address" in msg]
    assert len(errors) == 1, errors
    assert len(errors[0]) < 300 and "(139920 more)" in errors[0], errors
    no_tracebacks(daemon)
