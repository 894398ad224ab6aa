"""``bms access query TAG SUBJECT`` (bmslib.cli.access): the value bms would
use, the file:line and key that gave it, or the built-in default; exit 1
when nothing applies.  Also :meth:`bmslib.access.AccessFile.explain`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import bms
from bmslib.access import AccessFile, AccessHit
from bmslib.policy.decision import AccessKind, AccessValue

ACCESS = """# test entries
SPF-Softfail:example.com   REJECT
SPF-Softfail:skip.example.com SKIP
SMTP-Auth:bob@   ERROR:"550 5.7.1 no bob here"
Connect:192.0.2  OK
From:spammer.test  REJECT
"""


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    (tmp_path / "access").write_text(ACCESS)
    path = tmp_path / "pymilter.cfg"
    path.write_text(f"[milter]\ndatadir = {tmp_path}\n[spf]\naccess_file = {tmp_path}/access\n"
                    "reject_neutral = strict.test\n")
    return path


def query(capsys: pytest.CaptureFixture[str], cfg: Path, tag: str,
          subject: str) -> tuple[int, str]:
    code = bms.main(["-c", str(cfg), "access", "query", tag, subject])
    out, err = capsys.readouterr()
    assert err == ""
    return code, out


def test_an_entry_names_its_line(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    where = cfg.parent / "access"
    assert query(capsys, cfg, "SPF-Softfail", "a@mail.Example.com") == (
        0, f"REJECT\t{where}:2 (spf-softfail:example.com)\n")
    assert query(capsys, cfg, "smtp-auth", "bob@anywhere.test") == (
        0, f'ERROR:"550 5.7.1 no bob here"\t{where}:4 (smtp-auth:bob@)\n')
    assert query(capsys, cfg, "Connect", "192.0.2.99") == (
        0, f"OK\t{where}:5 (connect:192.0.2)\n")
    # From is also looked up untagged in sendmail's order; the tagged key is here.
    assert query(capsys, cfg, "From", "x@spammer.test") == (
        0, f"REJECT\t{where}:6 (from:spammer.test)\n")


def test_built_in_defaults_follow_the_config(capsys: pytest.CaptureFixture[str],
                                             cfg: Path) -> None:
    where = cfg.parent / "access"
    assert query(capsys, cfg, "SPF-Neutral", "a@example.org") == (
        0, "OK\tbuilt-in default for SPF-Neutral\n")
    assert query(capsys, cfg, "SPF-Neutral", "a@strict.test") == (
        0, "REJECT\tbuilt-in default for SPF-Neutral\n")  # [spf] reject_neutral
    assert query(capsys, cfg, "SPF-Softfail", "a@skip.example.com") == (
        0, f"CBV\t{where}:3 (spf-softfail:skip.example.com) says SKIP; "
           "built-in default for SPF-Softfail\n")
    assert query(capsys, cfg, "HELO-Fail", "mx.example.org") == (
        0, "REJECT\tbuilt-in default for HELO-Fail\n")


def test_nothing_applies(capsys: pytest.CaptureFixture[str], cfg: Path,
                         tmp_path: Path) -> None:
    assert query(capsys, cfg, "Connect", "10.1.2.3") == (
        1, "no entry: nothing applies to Connect 10.1.2.3\n")
    bare = tmp_path / "bare.cfg"
    bare.write_text("[spf]\naccess_file =\n")
    assert query(capsys, bare, "SMTP-Auth", "bob\x1b@x") == (
        1, "no access file: nothing applies to SMTP-Auth bob\\x1b@x\n")


def test_an_unreadable_access_file_is_one_line(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    cfg = tmp_path / "gone.cfg"
    cfg.write_text(f"[spf]\naccess_file = {tmp_path}/missing\n")
    assert bms.main(["-c", str(cfg), "access", "query", "Connect", "192.0.2.1"]) == 2
    assert capsys.readouterr().err == (
        f"bms access: {cfg}: [spf] access_file: {tmp_path}/missing: cannot read: "
        "No such file or directory\n")


def test_explain_agrees_with_lookup(tmp_path: Path) -> None:
    path = tmp_path / "access"
    path.write_text("spammer.test REJECT\nTo:postmaster@ OK\nSPF-Pass: OK\n")
    access = AccessFile(str(path))
    assert access.explain("From", "a@mx.spammer.test") == AccessHit(
        "spammer.test", AccessValue(AccessKind.REJECT), str(path), 1)  # untagged
    assert access.explain("To", "postmaster@example.org") == AccessHit(
        "to:postmaster@", AccessValue(AccessKind.OK), str(path), 2)
    assert access.explain("SPF-Pass", "x@y.test") == AccessHit(
        "spf-pass:", AccessValue(AccessKind.OK), str(path), 3)  # the tag's default
    assert access.explain("SPF-Fail", "x@spammer.test") is None  # untagged: sendmail tags only
    for tag, subject in (("From", "a@mx.spammer.test"), ("SPF-Fail", "x@spammer.test")):
        hit = access.explain(tag, subject)
        assert access.lookup(tag, subject) == (hit.value if hit else None)


def test_output_into_a_closed_pipe_is_no_traceback(cfg: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """``bms access query … | head -0``: exit 1, nothing on stderr."""
    read, write = os.pipe()
    os.close(read)
    with os.fdopen(write, "w", buffering=1) as out:  # line-buffered: print() writes
        monkeypatch.setattr(sys, "stdout", out)
        assert bms.main(["-c", str(cfg), "access", "query", "Connect", "192.0.2.1"]) == 1
        print("after", file=out)  # the descriptor now goes to /dev/null
