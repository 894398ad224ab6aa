"""The content policy end to end (issue 4): a real ``bms`` process behind real
Postfix and real sendmail (``-bD``).  Defang (an ``.exe``; a ``.scr`` inside
a zip) with the original saved in tempdir, charset blocking, Subject words,
the mail archive, wiretap and smart_alias; and a 20 MB message through
Postfix with bounded memory.

Mail comes from 198.51.100.66 (``CLIENT_IP``) with senders in ``pass.test``,
whose SPF passes (the access file is empty: the built-in defaults accept).
"""

from __future__ import annotations

import base64
import io
import mailbox
import os
import re
import stat
import zipfile
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from testbed import Postfix, SmtpClient, Transaction
from testbed.bms_mta import Mta, sendmail  # noqa: F401 - sendmail -bD in front of bms
from testbed.bmsd import BmsDaemon
from testbed.mail import new_message_id
from testbed.nsd import CLIENT_IP, CLIENT_PTR, Nsd

pytestmark = pytest.mark.e2e

RCPT = "rcpt@example.test"
SPY = "spy@example.test"
BIG = 20 * 2**20


@pytest.fixture(scope="module")
def bms(nsd: Nsd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BmsDaemon]:
    archive = tmp_path_factory.mktemp("archive") / "archive.mbox"
    sections = {
        "dns": {"nameservers": nsd.nameserver, "timeout": "1", "lifetime": "2"},
        "defang": {"scan_zip": "1", "block_chinese": "1", "porn_words": "viagra, xxx-rated",
                   "spam_words": "$$$"},
        "wiretap": {"users": "spied@pass.test", "dest": SPY, "archive": str(archive)},
        "smart_alias": {"sales": "alias@pass.test, sales@example.test, boss@example.test"},
    }
    with BmsDaemon(sections, "") as daemon:
        yield daemon


@pytest.fixture(scope="module")
def postfix(bms: BmsDaemon) -> Iterator[Postfix]:
    with Postfix(milters=bms.postfix_spec,
                 main_cf={"message_size_limit": str(4 * BIG),
                          "virtual_mailbox_limit": "0"}) as pf:
        yield pf


def mime_message(mid: str, sender: str, subject: str = "content test",
                 attachment: tuple[str, bytes, str] | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = RCPT
    msg["Subject"] = "SUBJECT-PLACEHOLDER"  # the email package would re-encode =?...?= text
    msg["Message-ID"] = mid
    msg.set_content("Hello, the file is attached.\n")
    if attachment is not None:
        name, data, ctype = attachment
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    raw = msg.as_bytes().replace(b"SUBJECT-PLACEHOLDER", subject.encode(), 1)
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def saved_original(bms: BmsDaemon, body: bytes) -> Path:
    """The path the warning names, which must lie in tempdir."""
    tempdir = bms.sections["milter"]["tempdir"]
    m = re.search(re.escape(tempdir).encode() + rb"/[\w.+-]+", body)
    assert m, body[:2000]
    return Path(m.group().decode())


def send(mta: Mta, sender: str, rcpts: list[str], data: bytes) -> Transaction:
    client = mta.connect(CLIENT_IP)
    code, _ = client.ehlo(CLIENT_PTR)
    assert code == 250
    t = client.transaction(sender, rcpts, data)
    assert t.mail.code == 250, t
    return t


def test_exe_attachment_is_replaced_and_saved(mta: Mta, bms: BmsDaemon) -> None:
    payload = b"MZ\x90\x00 pretend program " + os.urandom(64)
    mid = new_message_id(f"exe-{mta.name}")
    t = send(mta, f"exe-{mta.name}@pass.test", [RCPT],
             mime_message(mid, "sender@pass.test", attachment=(
                 "invoice.exe", payload, "application/octet-stream")))
    assert t.data is not None and t.data.code == 250, t
    m = mta.stored(t, mid)
    assert b"invoice.exe" in m.body and b"WARNING.TXT" in m.body, m.body
    assert base64.b64encode(payload)[:40] not in m.body
    saved = saved_original(bms, m.body)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert base64.b64encode(payload)[:40] in saved.read_bytes()
    line = bms.wait_log(f"original saved as {saved}")
    assert line.startswith("DEFANG: invoice.exe: banned extension .exe"), line


def test_zipped_scr_is_replaced_with_scan_zip(mta: Mta, bms: BmsDaemon) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("readme.txt", "nothing to see\n")
        z.writestr("screensaver.scr", b"MZ" + os.urandom(200))
    mid = new_message_id(f"zip-{mta.name}")
    t = send(mta, f"zip-{mta.name}@pass.test", [RCPT],
             mime_message(mid, "sender@pass.test", attachment=(
                 "photos.zip", buf.getvalue(), "application/zip")))
    assert t.data is not None and t.data.code == 250, t
    m = mta.stored(t, mid)
    assert b"photos.zip" in m.body and b"screensaver.scr" in m.body, m.body
    saved = saved_original(bms, m.body)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    line = bms.wait_log(f"original saved as {saved}")
    assert line.startswith("DEFANG: photos.zip"), line


@pytest.mark.parametrize("subject, expect", [
    ("=?big5?B?pKSk5bT6uNU=?=", "charset big5 in Subject"),
    ("Cheap VIAGRA today", "Subject: Cheap VIAGRA today"),
])
def test_subject_rejected(mta: Mta, bms: BmsDaemon, subject: str, expect: str) -> None:
    mid = new_message_id(f"subject-{mta.name}")
    sender = f"words-{mta.name}-{len(subject)}@pass.test"
    t = send(mta, sender, [RCPT], mime_message(mid, "sender@pass.test", subject=subject))
    assert t.data is not None and t.data.code == 550, t
    assert "5.7.1" in t.data.text, t
    log = bms.connection_of(f"mail from <{sender}>")
    assert any(line.startswith("REJECT: " + expect) for line in log), log


def test_wiretap_copies_to_the_spy(mta: Mta, bms: BmsDaemon) -> None:
    mid = new_message_id(f"wiretap-{mta.name}")
    t = send(mta, "spied@pass.test", [RCPT], mime_message(mid, "spied@pass.test"))
    assert t.data is not None and t.data.code == 250, t
    assert sorted(mta.stored(t, mid).recipients) == sorted([RCPT, SPY])


def test_smart_alias_redirects(mta: Mta, bms: BmsDaemon) -> None:
    mid = new_message_id(f"alias-{mta.name}")
    t = send(mta, "alias@pass.test", ["sales@example.test", RCPT],
             mime_message(mid, "alias@pass.test"))
    assert t.data is not None and t.data.code == 250, t
    assert sorted(mta.stored(t, mid).recipients) == sorted(["boss@example.test", RCPT])


def _lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def test_archive_holds_the_delivered_message(mta: Mta, bms: BmsDaemon) -> None:
    mid = new_message_id(f"archive-{mta.name}")
    text = "From the start: a line the mbox must escape.\n>From too.\n"
    msg = mime_message(mid, "sender@pass.test").replace(
        b"Hello, the file is attached.", text.encode().replace(b"\n", b"\r\n").rstrip())
    t = send(mta, f"archive-{mta.name}@pass.test", [RCPT], msg)
    assert t.data is not None and t.data.code == 250, t
    delivered = mta.stored(t, mid)
    bms.wait_log("ARCHIVE:")
    path = bms.sections["wiretap"]["archive"]
    box = mailbox.mbox(path)
    try:
        [archived] = [m for m in box if m["Message-ID"] == mid]
    finally:
        box.close()
    # mboxrd: the reader unescapes one ">" of ">From" lines itself.
    raw = archived.as_bytes(unixfrom=False)
    body = raw.split(b"\n\n", 1)[1]
    body = re.sub(rb"(?m)^>(>*From )", rb"\1", body)
    assert body == _lf(delivered.body)
    # Every header the MTA delivered that bms saw is in the archive, in order
    # (the MTA adds Received / Return-Path lines of its own).
    ours = [(n.lower(), re.sub(r"\s+", " ", v).strip()) for n, v in archived.items()]
    theirs = [(n.lower(), re.sub(r"\s+", " ", v).strip()) for n, v in delivered.headers
              if n.lower() not in ("received", "return-path")]
    assert [h for h in ours if h[0] != "received"] == theirs
    assert archived.get_from().startswith(f"archive-{mta.name}@pass.test ")


def _rss_peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_20mb_message_passes_with_bounded_memory(postfix: Postfix, bms: BmsDaemon) -> None:
    assert bms.proc is not None
    # Warm up: the first message loads every module of the content path.
    client = SmtpClient("127.0.0.1", postfix.port, source_address=(CLIENT_IP, 0))
    client.ehlo(CLIENT_PTR)
    warm = new_message_id("warm")
    t = client.transaction("big@pass.test", [RCPT], mime_message(
        warm, "big@pass.test", attachment=("small.pdf", b"%PDF" + os.urandom(2**20),
                                           "application/pdf")))
    assert t.data is not None and t.data.code == 250, t
    postfix.message(warm)
    before = _rss_peak_kb(bms.proc.pid)
    mid = new_message_id("big")
    payload = os.urandom(BIG)
    data = mime_message(mid, "big@pass.test", attachment=("big.pdf", payload, "application/pdf"))
    assert len(data) > BIG
    t = client.transaction("big@pass.test", [RCPT], data)
    client.close_politely()
    assert t.data is not None and t.data.code == 250, t
    growth_kb = _rss_peak_kb(bms.proc.pid) - before
    print(f"20 MB message: bms peak RSS {before} kB -> +{growth_kb} kB")  # shown with -s
    assert growth_kb < 10 * 1024, f"peak RSS grew by {growth_kb} kB"
    m = postfix.message(mid, timeout=60)
    parsed = mailbox.mboxMessage(b"\n".join(f"{n}: {v}".encode() for n, v in m.headers)
                                 + b"\n\n" + m.body)
    parts = [p for p in parsed.walk() if p.get_filename() == "big.pdf"]
    assert len(parts) == 1 and parts[0].get_payload(decode=True) == payload
