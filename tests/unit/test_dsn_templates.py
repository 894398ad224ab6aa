"""DSN templates (SPEC §4a): the shipped ones are well-formed, overrides and
broken templates are handled, hostile values cannot inject anything."""

from __future__ import annotations

import email
import email.message
import email.policy
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmslib.policy import dsn
from bmslib.policy.dsn import (
    TEMPLATE_NAMES,
    VARIABLES,
    Template,
    TemplateError,
    build_message,
    clean_value,
    load_templates,
    parse_template,
)

NOW = 1_700_000_000.0

VALUES: dict[str, str] = {
    "sender": "alice@example.com",
    "receiver": "mx.ours.test",
    "sender_domain": "example.com",
    "heloname": "client.example.com",
    "connectip": "192.0.2.7",
    "result": "softfail",
    "perm_error": "Too many DNS lookups",
    "rcpt": "bob@ours.test\tcarol@ours.test",
    "subject": "Quarterly report",
    "spf_result": "softfail (mx.ours.test: domain of transitioning example.com does not "
                  "designate 192.0.2.7 as permitted sender) client-ip=192.0.2.7;",
}


def parse(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def build(template: Template, **overrides: str) -> bytes:
    return build_message(template, {**VALUES, **overrides}, to="alice@example.com",
                         receiver="mx.ours.test", now=NOW)


def headers_block(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


SHIPPED = load_templates(None)


def test_every_name_has_a_shipped_template() -> None:
    assert set(SHIPPED) == set(TEMPLATE_NAMES)
    for name, tmpl in SHIPPED.items():
        assert tmpl.name == name
        assert tmpl.filename == f"{name}.txt"


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_shipped_template_uses_documented_fields_only(name: str) -> None:
    tmpl = SHIPPED[name]
    text = tmpl.body + "".join(v for _f, v in tmpl.headers)
    fields = set(re.findall(r"%\((\w+)\)s", text))
    assert fields <= VARIABLES
    assert "sender_domain" in fields or "heloname" in fields
    assert [f.lower() for f, _v in tmpl.headers] == ["subject"]


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_shipped_template_builds_a_wellformed_message(name: str) -> None:
    data = build(SHIPPED[name])
    assert data.isascii()
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF line ends only
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    msg = parse(data)
    assert not msg.defects
    for field in ("From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted",
                  "MIME-Version", "Content-Type"):
        assert len(msg.get_all(field) or []) == 1, field
    assert msg["From"] == "postmaster@mx.ours.test"
    assert msg["To"] == "alice@example.com"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Message-ID"].endswith("@mx.ours.test>")
    assert email.utils.parsedate_to_datetime(msg["Date"]).timestamp() == NOW
    assert msg.get_content_type() == "text/plain"
    body = msg.get_content()
    assert "%(" not in body and "%(" not in msg["Subject"]
    assert "mx.ours.test" in body
    assert "SPF" in body  # what the notice is about...
    assert "please" in body.lower()  # ...and what to do about it
    assert "192.0.2.7" in body
    assert "bob@ours.test, carol@ours.test" in body  # the tab-joined recipients
    if name == "permerror":
        assert "Too many DNS lookups" in body
    if name not in ("strike3",):
        assert "softfail" in body  # the SPF result


def test_subject_names_the_sender() -> None:
    msg = parse(build(SHIPPED["fail"]))
    assert msg["Subject"] == "Sender policy (SPF) failure for mail from alice@example.com"


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
@pytest.mark.parametrize("hostile", [
    "hi\r\nBcc: victim@example.net",
    "hi\nBcc: victim@example.net",
    "hi\rBcc: victim@example.net",
    "hi\r\n\r\nInjected body",
    "x\x00\x07\x1b[31m\u2028Bcc: victim@example.net",
])
def test_no_header_injection(name: str, hostile: str) -> None:
    data = build(SHIPPED[name], subject=hostile, sender=hostile, heloname=hostile,
                 rcpt=hostile, perm_error=hostile, spf_result=hostile)
    msg = parse(data)
    assert not msg.defects
    assert msg.get_all("Bcc") is None
    assert not re.search(rb"^(Bcc|Injected)", data, re.MULTILINE | re.IGNORECASE)
    assert b"\x00" not in data and b"\x1b" not in data
    assert {k.lower() for k in msg} == {
        "subject", "to", "from", "date", "message-id", "auto-submitted", "mime-version",
        "content-type", "content-transfer-encoding"}
    assert "Injected body" not in msg.get_content().splitlines()  # not a line of its own


def test_8bit_and_undecodable_values_are_encoded() -> None:
    latin1 = b"R\xe9sum\xe9 \xff".decode("utf-8", "surrogateescape")  # as read off the wire
    data = build(SHIPPED["fail"], subject=latin1, sender="j\u00f6rg@example.com")
    assert data.isascii()
    msg = parse(data)
    assert not msg.defects
    assert "j\u00f6rg@example.com" in msg["Subject"]
    body = msg.get_content()
    assert "R\ufffdsum\ufffd \ufffd" in body
    assert "j\u00f6rg@example.com" in body


def test_long_values_are_cut() -> None:
    data = build(SHIPPED["neutral"], subject="A" * 5000)
    body = parse(data).get_content()
    assert "A" * 400 in body
    assert "A" * 600 not in body
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))


def test_missing_values_are_empty() -> None:
    msg = parse(build_message(SHIPPED["fail"], {}, to="a@b.example", receiver="mx.test",
                              now=NOW))
    assert msg["Subject"] == "Sender policy (SPF) failure for mail from"
    assert msg["To"] == "a@b.example"


def test_unknown_variable_is_a_caller_bug() -> None:
    with pytest.raises(ValueError, match="sendr"):
        build_message(SHIPPED["fail"], {"sendr": "x"}, to="a@b.example", receiver="mx.test",
                      now=NOW)


def test_quoted_local_part_in_to() -> None:
    data = build_message(SHIPPED["fail"], VALUES, to='"john doe"@example.com',
                         receiver="mx.test", now=NOW)
    assert parse(data)["To"].addresses[0].addr_spec == '"john doe"@example.com'


def test_clean_value() -> None:
    assert clean_value("a\r\nb\tc") == "a b c"
    assert clean_value(["x@y", "z@w"]) == "x@y, z@w"
    assert clean_value("\udce9") == "\ufffd"
    assert clean_value("  padded  ") == "padded"
    assert len(clean_value("x" * 1000)) == dsn.MAX_VALUE


# --- parsing and loading ------------------------------------------------------------------

def tmpl(text: str) -> Template:
    return parse_template(text, name="t", path="/d/t.txt")


def test_template_headers_continuation_and_percent() -> None:
    t = tmpl("Subject: 100%% sure about\n  %(sender)s\nX-Note: %(result)s\n\nBody %(rcpt)s 5%%\n")
    assert t.headers == (("Subject", "100%% sure about %(sender)s"), ("X-Note", "%(result)s"))
    msg = parse(build(t))
    assert msg["Subject"] == "100% sure about alice@example.com"
    assert msg["X-Note"] == "softfail"
    assert msg.get_content().rstrip() == "Body bob@ours.test, carol@ours.test 5%"


def test_template_may_set_from_and_to() -> None:
    t = tmpl("From: Mail robot <robot@ours.test>\nTo: %(sender)s\nSubject: s\n\nb\n")
    msg = parse(build(t))
    assert msg["From"] == "Mail robot <robot@ours.test>"
    assert msg.get_all("To") == ["alice@example.com"]


def test_template_without_headers() -> None:
    t = tmpl("\nJust a body for %(sender)s\n")
    assert t.headers == ()
    assert "Just a body for alice@example.com" in parse(build(t)).get_content()


def test_crlf_template() -> None:
    t = tmpl("Subject: s\r\n\r\nline one\r\nline two\r\n")
    assert t.body == "line one\nline two\n"


@pytest.mark.parametrize(("text", "error"), [
    ("Subject: x\n\n%(sendr)s\n", "unknown field %\\(sendr\\)s"),
    ("Subject: %(bogus)s\n\nb\n", "header Subject: unknown field"),
    ("Subject: x\n\n%(sender)d\n", "bad field"),
    ("Subject: x\n\n%(heloname)\n", "bad field"),  # the original heloerror.txt's typo
    ("Subject: x\n\n100% sure\n", "bad field"),
    ("Subject: x\n\n%s\n", "bad field"),
    ("Subject: x\nbody without a blank line\n", "no blank line"),
    ("Subject: x", "no blank line"),
    (" folded\nSubject: x\n\nb\n", "continuation line"),
    ("Content-Type: text/html\n\nb\n", "set by bms"),
    ("Subject: a\nSubject: b\n\nb\n", "given twice"),
    ("Bad Header: x\n\nb\n", "not a header line"),
])
def test_bad_template(text: str, error: str) -> None:
    with pytest.raises(TemplateError, match=error) as info:
        tmpl(text)
    assert "/d/t.txt" in str(info.value)


def test_datadir_overrides_shipped(tmp_path: Path) -> None:
    (tmp_path / "fail.txt").write_text("Subject: local %(sender)s\n\nLocal notice.\n")
    (tmp_path / "custom.txt").write_text("Subject: custom\n\nCustom.\n")
    loaded = load_templates(str(tmp_path), names=(*TEMPLATE_NAMES, "custom", "missing"))
    assert loaded["fail"].path == str(tmp_path / "fail.txt")
    assert loaded["softfail"].path == SHIPPED["softfail"].path
    assert loaded["custom"].body == "Custom.\n"
    assert "missing" not in loaded
    assert parse(build(loaded["fail"]))["Subject"] == "local alice@example.com"


def test_bad_datadir_template_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "neutral.txt").write_text("Subject: x\n\n%(nope)s\n")
    with pytest.raises(TemplateError, match=r"neutral\.txt"):
        load_templates(str(tmp_path))


def test_undecodable_datadir_template(tmp_path: Path) -> None:
    (tmp_path / "neutral.txt").write_bytes(b"Subject: \xff\n\nb\n")
    with pytest.raises(TemplateError, match="cannot read"):
        load_templates(str(tmp_path))


@settings(max_examples=150, deadline=None)
@given(name=st.sampled_from(TEMPLATE_NAMES),
       values=st.fixed_dictionaries({}, optional={k: st.text(max_size=700)
                                                  for k in sorted(VARIABLES)}))
def test_any_values_give_a_wellformed_message(name: str, values: dict[str, str]) -> None:
    data = build_message(SHIPPED[name], values, to="a@b.example", receiver="mx.ours.test",
                         now=NOW)
    assert data.isascii()
    assert all(len(line) <= 998 for line in data.split(b"\r\n"))
    msg = parse(data)
    assert not msg.defects
    assert len(list(msg)) == 9  # the builder's headers, none injected
    msg.get_content()
