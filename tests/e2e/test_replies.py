"""Verdicts and custom replies (setreply) as the SMTP client receives them."""

from __future__ import annotations

import pytest
from testbed import make_message

from .conftest import MtaPath

pytestmark = pytest.mark.e2e

SENDER = "sender@example.test"


def test_rcpt_rejected_with_custom_reply(path: MtaPath) -> None:
    """REJECT + setreply('550', '5.7.1', text) at RCPT: that reply for that
    recipient only; the message goes to the others."""
    smtp = path.connect()
    mid, msg = make_message()
    t = smtp.transaction(SENDER, ["ok@example.test", "reject@example.test"], msg)

    reply = t.rcpt["reject@example.test"]
    assert reply.code == 550, reply
    assert reply.text.startswith("5.7.1 "), reply
    assert reply.text.endswith("custom reject text"), reply
    assert t.rcpt["ok@example.test"].code == 250
    m = path.stored(t, mid)
    assert m.recipients == ["ok@example.test"]
    assert m.get("X-Feature-Rcpts") == "ok@example.test"


def test_rcpt_rejected_with_multiline_reply(path: MtaPath) -> None:
    """setreply with several lines: a multi-line 550, each line with 5.7.1."""
    smtp = path.connect()
    mid, msg = make_message()
    t = smtp.transaction(SENDER, ["reject-multi@example.test", "ok@example.test"], msg)

    reply = t.rcpt["reject-multi@example.test"]
    assert reply.code == 550, reply
    assert len(reply.lines) == 3, reply
    for line, text in zip(reply.lines, ("custom first line", "custom second line",
                                        "custom third line"), strict=True):
        assert line.startswith("5.7.1 ") and line.endswith(text), reply
    m = path.stored(t, mid)
    assert m.recipients == ["ok@example.test"]


def test_rcpt_tempfailed(path: MtaPath) -> None:
    """TEMPFAIL at RCPT: a 4xx reply (the MTA's own text)."""
    smtp = path.connect()
    mid, msg = make_message()
    t = smtp.transaction(SENDER, ["tempfail@example.test", "ok@example.test"], msg)

    reply = t.rcpt["tempfail@example.test"]
    assert 400 <= reply.code < 500, reply
    assert reply.text.startswith("4."), reply
    m = path.stored(t, mid)
    assert m.recipients == ["ok@example.test"]


def test_rcpt_tempfailed_with_custom_reply(path: MtaPath) -> None:
    smtp = path.connect()
    _mid, msg = make_message()
    t = smtp.transaction(SENDER, ["tempfail-text@example.test"], msg)

    reply = t.rcpt["tempfail-text@example.test"]
    assert reply.code == 451, reply
    assert reply.text.startswith("4.7.1 ") and reply.text.endswith("custom tempfail text"), reply
    assert t.data is None  # no recipient left: no DATA


def test_message_rejected_at_eom(path: MtaPath) -> None:
    """REJECT with a custom reply at end of message: the DATA reply carries it
    and nothing is queued; the session goes on."""
    smtp = path.connect()
    mid, msg = make_message()
    t = smtp.transaction(SENDER, ["reject-eom@example.test"], msg)

    assert t.data is not None and t.data.code == 550, t
    assert t.data.text.startswith("5.7.2 ") and t.data.text.endswith("eom reject"), t
    assert path.absent(mid)

    # The next message on the same connection is accepted, with fresh state.
    mid2, msg2 = make_message()
    t2 = smtp.transaction(SENDER, ["ok@example.test"], msg2)
    m = path.stored(t2, mid2)
    assert m.get("X-Feature-Rcpts") == "ok@example.test"
    assert m.get("X-Feature-Msgno") == "2"


def test_exception_in_rcpt(path: MtaPath) -> None:
    """A callback that raises: the exception policy (TEMPFAIL, pymilter's
    451 4.3.0 text) answers that command; the session goes on."""
    smtp = path.connect()
    mid, msg = make_message()
    t = smtp.transaction(SENDER, ["crash@example.test", "ok@example.test"], msg)

    reply = t.rcpt["crash@example.test"]
    assert reply.code == 451, reply
    assert reply.text.startswith("4.3.0 "), reply
    assert "untrapped exception" in reply.text, reply
    m = path.stored(t, mid)
    assert m.recipients == ["ok@example.test"]
    assert m.get("X-Feature-Rcpts") == "ok@example.test"


def test_exception_in_eom_applies_no_edit(path: MtaPath) -> None:
    """eom raises after an edit: the message is tempfailed and the half edit
    set is not sent (nothing queued with it); the next message is fine."""
    smtp = path.connect()
    mid, msg = make_message()
    t = smtp.transaction(SENDER, ["crash-eom@example.test"], msg)

    assert t.data is not None and t.data.code == 451, t
    assert "untrapped exception" in t.data.text, t
    assert path.absent(mid)
    mid2, msg2 = make_message()
    t2 = smtp.transaction(SENDER, ["ok@example.test"], msg2)
    m = path.stored(t2, mid2)
    assert m.get("X-Half-Done") is None
    assert m.get("X-Feature-Msgno") == "2"


def test_exception_in_noreply_header(path: MtaPath) -> None:
    """header() is @noreply (the MTA reads no reply there with protocol 6): its
    failure must be answered at the next command the MTA waits for, so the
    message is tempfailed instead of accepted."""
    smtp = path.connect()
    mid, msg = make_message(headers=[("X-Crash", "yes")])
    t = smtp.transaction(SENDER, ["ok@example.test"], msg)

    assert t.data is not None and 400 <= t.data.code < 500, t
    assert path.absent(mid)
