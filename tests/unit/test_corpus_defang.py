"""The defang side of every corpus case (tests/corpus.py): scan() never raises, defang
cases find exactly the expected attachments and their rewritten body has and lacks
the expected bytes, every other case is left alone, and charsets of text parts are
reported for the policy's charset check."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

import pytest
from corpus import BANNED_EXTS, CASES, CORPUS_DIR, CORPUS_SETTINGS, TEXT_PART_CHARSETS, Case
from corpus import split_message as split

from bmslib.content.defang import DefangSettings, ScanResult, scan

SETTINGS = DefangSettings(
    banned_exts=frozenset(BANNED_EXTS), scan_zip=bool(CORPUS_SETTINGS["scan_zip"]),
    scan_rfc822=bool(CORPUS_SETTINGS["scan_rfc822"]),
    scan_html=bool(CORPUS_SETTINGS["scan_html"]))
SAVED = "/var/log/milter/save/bms-corpus.msg"


def test_the_corpus_is_complete() -> None:
    assert len(CASES) >= 45
    assert len({c.name for c in CASES}) == len(CASES)
    assert {c.verdict for c in CASES} == {"accept", "defang", "reject:charset",
                                          "reject:subject", "reject:from words"}
    used = {p.name for p in CORPUS_DIR.glob("*.eml")}
    assert len(used) >= 30
    for case in CASES:
        if case.verdict == "defang":
            assert case.findings, case.name
        else:
            assert not case.findings, case.name


def test_split_message_keeps_folds_and_8bit() -> None:
    raw = b"Subject: a\r\n b\r\nX-8: caf\xe9\r\nbody-line\r\nrest"
    assert split(raw) == ([("Subject", "a\n b"), ("X-8", "caf\udce9")], b"body-line\r\nrest")
    assert split(b"A: 1\r\n\r\nbody") == ([("A", "1")], b"body")
    assert split(b"A: 1") == ([("A", "1")], b"")


@pytest.fixture(params=CASES, ids=[c.name for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    c: Case = request.param
    return c


Spooled = tuple[list[tuple[str, str]], "tempfile.SpooledTemporaryFile[bytes]", bytes]


@pytest.fixture
def spooled(case: Case) -> Iterator[Spooled]:
    headers, body = split(case.build())
    with tempfile.SpooledTemporaryFile(max_size=1 << 20) as fp:
        fp.write(body)
        fp.seek(0)
        yield headers, fp, body


def test_case(case: Case, spooled: Spooled) -> None:
    headers, fp, body = spooled
    result: ScanResult = scan(headers, fp, SETTINGS)
    got = tuple(f.filename for f in result.findings)
    if case.verdict != "defang":
        assert got == (), result
        delivered = body
    else:
        assert got == case.findings, result
        with tempfile.SpooledTemporaryFile(max_size=1 << 20) as out:
            result.rewrite(fp, out, SAVED)
            out.seek(0)
            delivered = out.read()
        assert delivered != body
        if any(f.replace for f in result.findings):
            assert SAVED.encode() in delivered
    for needle in case.body_contains:
        assert needle in delivered, needle
    for needle in case.body_lacks:
        assert needle not in delivered, needle
    if case.name in TEXT_PART_CHARSETS:
        assert TEXT_PART_CHARSETS[case.name] in result.charsets
