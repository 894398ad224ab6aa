"""bmslib.safetext: whatever outside text goes in, the framework guards never
have to refuse what comes out (issue 13)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bmslib import safetext
from Milter.context import _check_envelope, _check_header_value
from Milter.protocol.replytext import MAX_LINE, build_reply

from .helpers import PROPERTY

HOSTILE = st.text(alphabet=st.characters(codec=None), max_size=3000) | st.sampled_from(
    ["a\r\nb", "\x1b[31m", "%s%n%", "\udcff\udc80", "x" * 5000, "\u2028", "\x00"])


@PROPERTY
@given(HOSTILE)
def test_reply_lines_are_always_accepted(text: str) -> None:
    line = safetext.setreply_line(text)
    assert len(line.encode()) <= safetext.MAX_REPLY_LINE <= MAX_LINE
    assert "%" not in line.replace("%%", "")  # every % doubled, no half pair at the cut
    build_reply(b"550", b"5.7.1", [line.replace("%%", "%").encode()])


@PROPERTY
@given(HOSTILE)
def test_header_values_and_host_names_are_always_accepted(text: str) -> None:
    for value in (safetext.header_value(text), safetext.host_name(text)):
        _check_header_value(value.encode("utf-8", "surrogateescape"))
        assert value.isascii() and value.isprintable()
    assert " " not in safetext.host_name(text)
    assert len(safetext.host_name(text)) <= safetext.HOST_LIMIT


@PROPERTY
@given(HOSTILE)
def test_envelope_addresses_are_sendable_or_refused(text: str) -> None:
    path = safetext.envelope_address(f"<{text}@example.org>")
    if path is not None:
        assert path == f"<{text}@example.org>"
        _check_envelope(path.encode("utf-8", "surrogateescape"), "change sender")


@pytest.mark.parametrize("bad", ["\r", "\n", "\x1b", "\x7f", "\udc9b", "a>b", ""])
def test_envelope_address_refuses(bad: str) -> None:
    assert safetext.envelope_address(f"<{bad}@example.org>" if bad else "<>") is None


@PROPERTY
@given(HOSTILE)
def test_log_text_is_one_bounded_line(text: str) -> None:
    out = safetext.log_text(text)
    assert len(out.splitlines()) <= 1 and "\x1b" not in out
    assert len(out) <= safetext.LOG_LIMIT + len(f"...({len(text)} more)")
