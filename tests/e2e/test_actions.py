"""End-of-message actions of a pymilter-API milter, applied by real MTAs.

Each test sends one message through every :class:`MtaPath` (Postfix over an
inet and a unix milter socket; sendmail ``-bs`` and ``-bD``, each over both)
and asserts on the message as the MTA stored it: Postfix's delivered Maildir
file, sendmail's qf/df queue files.
"""

from __future__ import annotations

import hashlib

import pytest
from milters.feature_milter import (
    BIG_BODY,
    REPLACED_BODY,
    REPORT_HEADERS,
    FeatureMilter,
    parse_macros,
)
from testbed import make_message

from .conftest import MtaPath, new_helo

pytestmark = pytest.mark.e2e

SENDER = "sender@example.test"


def test_report_headers_are_appended(path: MtaPath) -> None:
    """addheader() without index: each header lands after the message's own, in
    call order, with the milter's view of the message."""
    smtp = path.connect()
    mid, msg = make_message(body="The original body.\n")
    t = smtp.transaction(SENDER, ["plain@example.test"], msg)
    m = path.stored(t, mid)

    names = m.header_names()
    positions = [m.index(h) for h in REPORT_HEADERS]
    assert positions == sorted(positions), names
    assert positions[0] > m.index("Message-ID"), names
    assert m.get("X-Feature-Rcpts") == "plain@example.test"
    assert m.get("X-Feature-From") == SENDER
    assert m.get("X-Feature-Msgno") == "1"
    original = b"The original body.\r\n"
    assert m.get("X-Feature-Body") == f"{len(original)} {hashlib.sha256(original).hexdigest()}"
    assert m.get("X-Feature-Headers") == "5"  # From To Subject Date Message-ID
    assert m.text == "The original body.\n"
    assert m.recipients == ["plain@example.test"]
    assert m.sender == SENDER


def test_inserted_headers_keep_their_index(path: MtaPath) -> None:
    """addheader(name, value, idx): index 0 then 1 puts both on top of the
    headers the client sent, in that order."""
    smtp = path.connect()
    mid, msg = make_message()
    t = smtp.transaction(SENDER, ["addheader@example.test"], msg)
    m = path.stored(t, mid)

    assert m.get("X-Feature-Top") == "inserted at index 0"
    assert m.get("X-Feature-Second") == "inserted at index 1"
    top, second = m.index("X-Feature-Top"), m.index("X-Feature-Second")
    assert second == top + 1, m.header_names()
    assert second < m.index("From"), m.header_names()
    if path.mta == "postfix":
        # Postfix counts its own (hidden) Received: header: index 0 is above it.
        assert top == 0 and m.index("Received") == 2, m.header_names()
    else:
        # sendmail keeps its own Received: (from sendmail.cf) first.
        assert m.header_names()[0] == "Received" and top == 1, m.header_names()


def test_header_values_pass_through(path: MtaPath) -> None:
    """Folded and UTF-8 header values reach header() as sent (folding as "\n"
    plus whitespace), and folded and UTF-8 values the milter adds are stored."""
    helo = new_helo()
    smtp = path.connect(helo)
    mid, msg = make_message(headers=[("X-Folded-In", "alpha\r\n\tbeta\r\n gamma"),
                                     ("X-Utf8-In", "Grüße, 世界")])
    t = smtp.transaction(SENDER, ["addheader@example.test"], msg)
    m = path.stored(t, mid)

    seen = dict(e.args for e in FeatureMilter.events_for(helo) if e.name == "header")
    assert seen["X-Folded-In"] == "alpha\n\tbeta\n gamma"
    assert seen["X-Utf8-In"] == "Grüße, 世界"
    assert m.get("X-Folded-In") == "alpha\n\tbeta\n gamma"
    assert m.get("X-Feature-Folded") == "first line\n\tsecond line"
    assert m.get("X-Feature-Utf8") == "Grüße, 世界"


def test_header_deleted_and_changed(path: MtaPath) -> None:
    """chgheader(name, 1, '') deletes the first occurrence only;
    chgheader('Subject', 1, text) replaces the value."""
    smtp = path.connect()
    mid, msg = make_message(subject="original subject",
                            headers=[("X-Remove-Me", "one"), ("X-Remove-Me", "two")])
    t = smtp.transaction(SENDER, ["delheader@example.test"], msg)
    m = path.stored(t, mid)

    assert m.get_all("X-Remove-Me") == ["two"]
    assert m.get_all("Subject") == ["subject changed by the milter"]


def test_body_replaced(path: MtaPath) -> None:
    """replacebody(): the MTA stores the new body; the milter saw the old one."""
    smtp = path.connect()
    original = "Original line one.\nOriginal line two.\n" * 50
    mid, msg = make_message(body=original)
    t = smtp.transaction(SENDER, ["body@example.test"], msg)
    m = path.stored(t, mid)

    assert m.text == REPLACED_BODY.decode().replace("\r\n", "\n")
    sent = original.replace("\n", "\r\n").encode()
    assert m.get("X-Feature-Body") == f"{len(sent)} {hashlib.sha256(sent).hexdigest()}"


def test_large_bodies(path: MtaPath) -> None:
    """A 400 KB body reaches the milter whole (several BODY packets), and a
    1.5 MiB replacement (many REPLBODY packets, spooled to disk) is stored whole."""
    smtp = path.connect()
    original = "".join(f"original line {i:06d} of a large message body\n" for i in range(9000))
    mid, msg = make_message(body=original)
    t = smtp.transaction(SENDER, ["bigbody@example.test"], msg)
    m = path.stored(t, mid)

    sent = original.replace("\n", "\r\n").encode()
    assert len(sent) > 400_000
    assert m.get("X-Feature-Body") == f"{len(sent)} {hashlib.sha256(sent).hexdigest()}"
    stored = m.body.replace(b"\r\n", b"\n")
    assert stored == BIG_BODY.replace(b"\r\n", b"\n")


def test_recipients_added(path: MtaPath) -> None:
    """addrcpt(rcpt) and addrcpt(rcpt, 'NOTIFY=NEVER') (ADDRCPT_PAR)."""
    smtp = path.connect()
    mid, msg = make_message()
    t = smtp.transaction(SENDER, ["addrcpt@example.test"], msg)
    m = path.stored(t, mid)

    assert sorted(m.recipients) == ["added-par@example.test", "added@example.test",
                                    "addrcpt@example.test"]
    if path.mta == "sendmail":
        # qf R line flags: N = NOTIFY given; F/D = notify on failure/delay.
        assert "N" in m.recipient_flags["added-par@example.test"]
        assert "F" not in m.recipient_flags["added-par@example.test"]
        assert "F" in m.recipient_flags["added@example.test"]


def test_recipient_deleted(path: MtaPath) -> None:
    """delrcpt(): the deleted recipient is not delivered (not queued), the
    others are."""
    smtp = path.connect()
    mid, msg = make_message()
    t = smtp.transaction(SENDER, ["delrcpt@example.test", "victim@example.test",
                                  "bystander@example.test"], msg)
    assert t.accepted == ["delrcpt@example.test", "victim@example.test",
                          "bystander@example.test"]
    m = path.stored(t, mid)

    assert sorted(m.recipients) == ["bystander@example.test", "delrcpt@example.test"]
    # The milter did see the deleted recipient.
    assert "victim@example.test" in (m.get("X-Feature-Rcpts") or "")


def test_sender_changed(path: MtaPath) -> None:
    """chgfrom(): Postfix's Return-Path, sendmail's qf S line."""
    smtp = path.connect()
    mid, msg = make_message()
    t = smtp.transaction(SENDER, ["chgfrom@example.test"], msg)
    m = path.stored(t, mid)

    assert m.sender == "changed-sender@example.test"
    assert m.get("X-Feature-From") == SENDER  # what the milter was given


def test_all_actions_in_one_message(path: MtaPath) -> None:
    """Every kind of edit in one end-of-message reply (body replacement mixed
    with other edits: Postfix wants the body packets contiguous)."""
    smtp = path.connect()
    rcpts = ["addheader@example.test", "body@example.test", "addrcpt@example.test",
             "delrcpt@example.test", "victim@example.test", "chgfrom@example.test",
             "delheader@example.test"]
    mid, msg = make_message(headers=[("X-Remove-Me", "one"), ("X-Remove-Me", "two")])
    t = smtp.transaction(SENDER, rcpts, msg)
    m = path.stored(t, mid)

    assert sorted(m.recipients) == sorted(
        [r for r in rcpts if r != "victim@example.test"]
        + ["added@example.test", "added-par@example.test"])
    assert m.sender == "changed-sender@example.test"
    assert m.text == REPLACED_BODY.decode().replace("\r\n", "\n")
    assert m.get_all("X-Remove-Me") == ["two"]
    assert m.get("Subject") == "subject changed by the milter"
    assert m.index("X-Feature-Top") + 1 == m.index("X-Feature-Second")
    assert m.get("X-Feature-Rcpts") == ",".join(rcpts)


def test_macros(path: MtaPath) -> None:
    """getsymval(): the MTA's macros, including the queue ID the client was told."""
    smtp = path.connect()
    mid, msg = make_message()
    t = smtp.transaction(SENDER, ["first@example.test", "last@example.test"], msg)
    m = path.stored(t, mid)
    value = m.get("X-Feature-Macros")
    assert value is not None
    macros, connect_macros = parse_macros(value)

    assert t.queue_id and macros["i"] == t.queue_id
    assert macros["j"] == connect_macros["j"] == "mx.example.test"
    # Our minimal sendmail.cf does not canonicalize, so its addresses keep <>.
    assert macros["{mail_addr}"].strip("<>") == SENDER
    assert macros["{rcpt_addr}"].strip("<>") == "last@example.test"
    if path.mta == "postfix":
        assert connect_macros["{daemon_name}"] == "mx.example.test"
        assert connect_macros["_"] == "localhost [127.0.0.1]"
    elif path.mode == "bD":
        assert connect_macros["{daemon_name}"] == "MTA"  # DaemonPortOptions Name=
        assert connect_macros["_"] == "localhost [127.0.0.1]"
    else:
        assert "{daemon_name}" not in connect_macros  # no daemon with -bs
        assert connect_macros["_"] == "root@localhost"


# What negotiate() is shown: the MTA's offer plus every "no reply" bit, which the
# framework emulates when the MTA lacks them (libmilter's FAKE_NR, 0xff080).
OFFERS = {6: "0x1ff 0x1fffff", 4: "0x1ff 0xff3ff", 2: "0x1ff 0xff0ff"}


def test_negotiation_offer(path: MtaPath) -> None:
    """negotiate() sees the MTA's offer (all of it for protocol 6)."""
    smtp = path.connect()
    mid, msg = make_message()
    t = smtp.transaction(SENDER, ["plain@example.test"], msg)
    assert path.stored(t, mid).get("X-Feature-Offer") == OFFERS[path.protocol]


@pytest.mark.parametrize("path", ["postfix-v2", "postfix-v4"], indirect=True)
def test_older_milter_protocols(path: MtaPath) -> None:
    """Postfix speaking milter protocol 2 or 4 (no "no reply" steps: the
    framework must answer the @noreply callbacks itself): replies and every
    edit still work."""
    smtp = path.connect()
    rcpts = ["addheader@example.test", "body@example.test", "addrcpt@example.test",
             "delrcpt@example.test", "victim@example.test", "chgfrom@example.test",
             "delheader@example.test", "reject@example.test"]
    mid, msg = make_message(headers=[("X-Remove-Me", "one"), ("X-Remove-Me", "two")])
    t = smtp.transaction(SENDER, rcpts, msg)
    reply = t.rcpt["reject@example.test"]
    assert (reply.code, reply.text) == (550, "5.7.1 custom reject text")
    m = path.stored(t, mid)

    assert m.get("X-Feature-Offer") == OFFERS[path.protocol]
    assert sorted(m.recipients) == sorted(
        [r for r in rcpts if r not in ("victim@example.test", "reject@example.test")]
        + ["added@example.test", "added-par@example.test"])
    assert m.sender == "changed-sender@example.test"
    assert m.text == REPLACED_BODY.decode().replace("\r\n", "\n")
    assert m.get_all("X-Remove-Me") == ["two"]
    assert m.header_names()[:3] == ["X-Feature-Top", "X-Feature-Second", "Received"]
    assert m.get("X-Feature-Headers") == "7"  # NR_HDR emulated: every header seen
