"""The content stage driven through the policy pipeline with fakes: checks at
end of headers, defang with the original saved, reject_virus_from, dry run,
recipient rewriting, and the archive getting the message as delivered."""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import pytest
from fakes import FakeAccess, FakeClock, FakeStore

from bmslib.content.defang import DefangSettings
from bmslib.policy.connection import ConnectionSettings, IpList
from bmslib.policy.content import content_settings
from bmslib.policy.decision import Action
from bmslib.policy.edits import HeaderEdit, apply_edits
from bmslib.policy.message import MessageSettings
from bmslib.policy.pipeline import PolicySettings, Services, SmtpSession
from bmslib.policy.recipients import RecipientSettings, address_set
from bmslib.spool import MessageSpool, save_original

INTERNAL = ConnectionSettings(IpList(["192.168.0.0/16"]), IpList([]))
EXE_BODY = (b"--XYZ\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
            b"--XYZ\r\nContent-Type: application/octet-stream; name=\"run.exe\"\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--XYZ--\r\n")
EXE_HEADERS = [("From", "a@b.example"), ("Subject", "files"), ("MIME-Version", "1.0"),
               ("Content-Type", 'multipart/mixed; boundary="XYZ"')]


class FakeArchive:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.got: list[tuple[str, list[tuple[str, str]], bytes]] = []

    def append(self, sender: str, headers: Sequence[tuple[str, str]], body: IO[bytes],
               when: float) -> str:
        if self.fail:
            raise OSError(28, "No space left on device")
        body.seek(0)
        self.got.append((sender, list(headers), body.read()))
        return "/archive/mbox"


def macros(**values: str) -> Any:
    table = {"j": "mx.example.com", **values}
    return lambda name: table.get(name)


def make(tmp_path: Path, *, archive: FakeArchive | None = None, dry_run: bool = False,
         **message: Any) -> SmtpSession:
    settings = PolicySettings(connection=INTERNAL, dry_run=dry_run,
                              message=MessageSettings(tempdir=str(tmp_path), **message))
    return SmtpSession(settings, Services(
        FakeAccess({}), FakeStore(), FakeClock(), archive=archive,
        save=lambda spool: save_original(spool, str(tmp_path))))


def deliver(s: SmtpSession, ip: str, headers: Sequence[tuple[str, str]], body: bytes,
            sender: str = "<a@b.example>", rcpts: Sequence[str] = ("<bob@example.com>",)
            ) -> Any:
    s.connect("client.example.net", socket.AF_INET, (ip, 4000), macros())
    s.helo("client.example.net")
    s.mail(sender, [], macros())
    for r in rcpts:
        s.rcpt(r, [])
    s.data()
    for name, value in headers:
        s.header(name, value)
    d = s.eoh()
    if d.final:
        return d
    s.body(body)
    return s.eom(macros(i="QID"))


DEFANG = DefangSettings(banned_exts=frozenset({"exe"}))


def test_banned_attachment_is_replaced_and_the_original_saved(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    result = deliver(make(tmp_path, defang=DEFANG), "198.51.100.9", EXE_HEADERS, EXE_BODY)
    assert not result.decision.final
    assert result.body is not None
    result.body.seek(0)
    new = result.body.read()
    assert b"run.exe" in new and b"TVqQAAMAAAAEAAAA" not in new
    [saved] = list(tmp_path.glob("bms-*.msg"))
    assert (saved.stat().st_mode & 0o777) == 0o600
    assert saved.read_bytes().endswith(EXE_BODY) and b"Subject: files\r\n" in saved.read_bytes()
    assert str(saved).encode() in new
    result.body.close()
    assert any(r.getMessage().startswith("DEFANG: run.exe") and str(saved) in r.getMessage()
               for r in caplog.records)


def test_reject_virus_from_rejects_instead(tmp_path: Path) -> None:
    s = make(tmp_path, defang=DEFANG, reject_virus_from=frozenset({"b.example"}))
    result = deliver(s, "198.51.100.9", EXE_HEADERS, EXE_BODY)
    assert result.decision.action is Action.REJECT and result.decision.code == "550"
    assert not list(tmp_path.glob("bms-*.msg"))


def test_dry_run_defangs_nothing_but_says_so(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    result = deliver(make(tmp_path, defang=DEFANG, dry_run=True), "198.51.100.9",
                     EXE_HEADERS, EXE_BODY)
    assert not result.decision.final and result.body is None
    assert not list(tmp_path.glob("bms-*.msg"))
    assert any(r.getMessage().startswith("DRYRUN DEFANG: run.exe") for r in caplog.records)


def test_saving_the_original_fails_is_a_tempfail(tmp_path: Path) -> None:
    settings = PolicySettings(connection=INTERNAL, message=MessageSettings(defang=DEFANG))

    def broken(spool: MessageSpool) -> str:
        raise OSError(28, "No space left on device")

    s = SmtpSession(settings, Services(FakeAccess({}), FakeStore(), FakeClock(), save=broken))
    result = deliver(s, "198.51.100.9", EXE_HEADERS, EXE_BODY)
    assert result.decision.action is Action.TEMPFAIL and result.decision.code == "451"


@pytest.mark.parametrize(("ip", "subject", "rejected"), [
    ("198.51.100.9", "=?big5?B?pKSk5bT6uNU=?=", True),
    ("198.51.100.9", "cheap viagra", True),
    ("192.168.1.5", "cheap viagra", False),  # internal mail is not word-checked
    ("198.51.100.9", "a normal subject", False),
])
def test_subject_checks_answer_at_end_of_headers(tmp_path: Path, ip: str, subject: str,
                                                 rejected: bool) -> None:
    cs = content_settings(block_chinese=True, block_charsets=(), porn_words=("viagra",),
                          spam_words=(), from_words=(), block_forward=())
    s = make(tmp_path, content=cs)
    out = deliver(s, ip, [("From", "a@b.example"), ("Subject", subject)], b"hi\r\n",
                  sender="<a@example.com>" if ip.startswith("192.") else "<a@b.example>")
    if rejected:
        assert out.action is Action.REJECT and out.code == "550" and out.xcode == "5.7.1"
    else:
        assert not out.decision.final


def test_charset_of_a_mime_part_is_blocked_at_end_of_message(tmp_path: Path) -> None:
    cs = content_settings(block_chinese=True, block_charsets=(), porn_words=(),
                          spam_words=(), from_words=(), block_forward=())
    body = (b"--XYZ\r\nContent-Type: text/plain; charset=gb2312\r\n\r\n\xd6\xd0\xce\xc4\r\n"
            b"--XYZ--\r\n")
    out = deliver(make(tmp_path, content=cs), "198.51.100.9", EXE_HEADERS, body)
    assert out.decision.action is Action.REJECT and out.decision.tag == "charset"


def test_archive_gets_the_message_as_delivered(tmp_path: Path) -> None:
    archive = FakeArchive()
    result = deliver(make(tmp_path, archive=archive, defang=DEFANG), "198.51.100.9",
                     EXE_HEADERS, EXE_BODY)
    assert not result.decision.final
    [(sender, headers, body)] = archive.got
    assert sender == "a@b.example"
    assert headers == apply_edits(EXE_HEADERS, result.edits)
    assert headers[0][0] == "Authentication-Results"
    result.body.seek(0)
    assert body == result.body.read()
    result.body.close()


def test_archive_failure_is_a_tempfail_never_a_lost_message(tmp_path: Path) -> None:
    out = deliver(make(tmp_path, archive=FakeArchive(fail=True)), "198.51.100.9",
                  [("Subject", "x")], b"hi\r\n")
    assert out.decision.action is Action.TEMPFAIL
    assert (out.decision.code, out.decision.xcode) == ("451", "4.3.0")


def test_wiretap_and_hide_path_at_end_of_message(tmp_path: Path) -> None:
    rs = RecipientSettings(wiretap_users=address_set(["a@b.example"], False),
                           wiretap_dest="spy@example.com", wiretap_blind=False,
                           hide_path=frozenset({"example.com"}))
    headers = [("Received", "from x by y"), ("Subject", "s"), ("Received", "from z by x")]
    out = deliver(make(tmp_path, recipients=rs), "198.51.100.9", headers, b"hi\r\n")
    assert out.add_rcpts == ("<spy@example.com>",)
    assert HeaderEdit("insert", "Cc", "spy@example.com", -1) in out.edits
    final = apply_edits(headers, out.edits)
    assert [n for n, _ in final if n == "Received"] == []


def test_apply_edits_follows_the_mta() -> None:
    headers = [("A", "1"), ("B", "2"), ("A", "3")]
    edits = [HeaderEdit("delete", "a", index=2), HeaderEdit("change", "B", "x", 1),
             HeaderEdit("insert", "C", "top"), HeaderEdit("insert", "D", "end", -1),
             HeaderEdit("change", "E", "new", 1), HeaderEdit("delete", "Z", index=1)]
    assert apply_edits(headers, edits) == [("C", "top"), ("A", "1"), ("B", "x"), ("D", "end"),
                                           ("E", "new")]


def test_spool_round_trip(tmp_path: Path) -> None:
    spool = MessageSpool(str(tmp_path), memory_limit=10)
    spool.add_header("Subject", "caf\udce9\n\tfolded")
    spool.add_body(b"x" * 100)
    out = io.BytesIO()
    spool.write_message(out)
    assert out.getvalue() == b"Subject: caf\xe9\r\n\tfolded\r\n\r\n" + b"x" * 100
    spool.close()
