"""The pure parts of bmslib.smtpclient (sessions over real sockets are in
tests/socket/test_cbv_sink.py)."""

from __future__ import annotations

import pytest

from bmslib.smtpclient import (
    MAX_TEXT,
    SmtplibTransport,
    SmtpOutcome,
    _dot_stuff,
    mailbox_path,
    reply_text,
)


@pytest.mark.parametrize(("raw", "text"), [
    (b"5.1.1 no such user", "5.1.1 no such user"),
    (b"line one\nline two", "line one / line two"),
    (b"tab\there\x00and\x1bthere", "tab?here?and?there"),
    ("100% sure", "100? sure"),  # sendmail's smfi_setreply would take % as a format
    (b"caf\xc3\xa9 \xff", "caf? ?"),
    (b"\r\n\r\n", ""),
])
def test_reply_text(raw: bytes | str, text: str) -> None:
    assert reply_text(raw) == text


def test_reply_text_is_bounded() -> None:
    out = reply_text(b"x" * 5000)
    assert len(out) == MAX_TEXT and out.endswith("...")


@pytest.mark.parametrize(("local", "domain", "path"), [
    ("alice", "example.com", "alice@example.com"),
    ("a.b+tag", "example.com", "a.b+tag@example.com"),
    ("john doe", "example.com", '"john doe"@example.com'),
    ('we"ird\\', "example.com", '"we\\"ird\\\\"@example.com'),
    ("a..b", "example.com", '"a..b"@example.com'),
])
def test_mailbox_path(local: str, domain: str, path: str) -> None:
    assert mailbox_path(local, domain) == path


@pytest.mark.parametrize(("local", "domain"), [
    ("", "example.com"),
    ("a", ""),
    ("j\u00f6rg", "example.com"),
    ("a\r\nRSET", "example.com"),
    ("a", "[192.0.2.1]"),
    ("a", "exa mple.com"),
    ("a", "-bad.example"),
    ("a", "x" * 300),
    ("a" * 250, "example.com"),
])
def test_mailbox_path_refuses(local: str, domain: str) -> None:
    with pytest.raises(ValueError):
        mailbox_path(local, domain)


def test_dot_stuffing() -> None:
    assert _dot_stuff(b"a\r\n.b\r\n..c\r\n.\r\n") == b"a\r\n..b\r\n...c\r\n..\r\n.\r\n"
    assert _dot_stuff(b"no final newline") == b"no final newline\r\n.\r\n"
    assert _dot_stuff(b".") == b"..\r\n.\r\n"


def test_outcome_ok() -> None:
    assert SmtpOutcome(250, "", "RCPT").ok
    assert SmtpOutcome(251, "", "RCPT").ok
    assert not SmtpOutcome(0, "refused", "connect").ok
    assert not SmtpOutcome(354, "", "DATA").ok


@pytest.mark.parametrize("kw", [
    {"helo": "two words"},
    {"helo": ""},
    {"helo": "h\r\nRSET"},
    {"recipient": "a@b\r\nRSET"},
    {"recipient": ""},
    {"ip": "mx.example.com"},  # names are resolved by the caller, never here
])
def test_transport_refuses_unsendable_arguments_before_connecting(kw: dict[str, str]) -> None:
    args = {"ip": "192.0.2.1", "helo": "mx.ours.test", "recipient": "a@example.com", **kw}
    transport = SmtplibTransport(port=9)  # never connected to: ValueError comes first
    with pytest.raises(ValueError):
        transport.probe(args["ip"], helo=args["helo"], recipient=args["recipient"],
                        timeout=0.1)


def test_transport_port_is_configurable() -> None:
    assert SmtplibTransport().port == 25
    assert SmtplibTransport(port=2525).port == 2525
