"""bmslib.content.defang (with zipscan and html): each rule, the rewrite, the warning
text, the top-level replacement, and bounded memory on a 20 MiB attachment."""

from __future__ import annotations

import base64
import email
import email.message
import hashlib
import io
import quopri
import tempfile
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmslib.content import zipscan
from bmslib.content.defang import (
    DefangSettings,
    Finding,
    ScanResult,
    banned_extension,
    escape_name,
    scan,
    warning_text,
)
from bmslib.content.html import SCRIPT_WARNING, remove_scripts

BANNED = frozenset({"bat", "com", "exe", "js", "pif", "scr", "vbs"})
ALL = DefangSettings(banned_exts=BANNED, scan_zip=True, scan_html=True)
SAVED = "/var/log/milter/save/bms-20260101-abc.msg"
CT = [("MIME-Version", "1.0"), ("Content-Type", 'multipart/mixed; boundary="b"')]


def b64(data: bytes) -> bytes:
    return base64.encodebytes(data).replace(b"\n", b"\r\n")


def attachment(name: str, data: bytes, ctype: str = "application/octet-stream") -> bytes:
    return (f'Content-Type: {ctype}; name="{name}"\r\n'
            f'Content-Disposition: attachment; filename="{name}"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\n").encode() + b64(data)


TEXT = b"Content-Type: text/plain; charset=us-ascii\r\n\r\nHello there.\r\n"


def multipart(*parts: bytes, boundary: bytes = b"b") -> bytes:
    d = b"--" + boundary
    return b"".join(d + b"\r\n" + p + b"\r\n" for p in parts) + d + b"--\r\n"


def run(body: bytes, headers: list[tuple[str, str]] | None = None,
        settings: DefangSettings = ALL) -> ScanResult:
    return scan(CT if headers is None else headers, io.BytesIO(body), settings)


def rewritten(body: bytes, result: ScanResult) -> tuple[bytes, tuple[tuple[str, str | None], ...]]:
    out = io.BytesIO()
    changes = result.rewrite(io.BytesIO(body), out, SAVED)
    return out.getvalue(), changes


def as_message(body: bytes, headers: list[tuple[str, str]] = CT) -> email.message.Message:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers).encode()
    return email.message_from_bytes(head + b"\r\n" + body)


def subparts(msg: email.message.Message) -> list[email.message.Message]:
    payload = msg.get_payload()
    assert isinstance(payload, list)
    return [p for p in payload if isinstance(p, email.message.Message)]


def text_of(part: email.message.Message) -> str:
    payload = part.get_payload()
    assert isinstance(payload, str)
    return payload


def decoded(part: email.message.Message) -> bytes:
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    return payload


def zip_bytes(*members: tuple[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in members:
            zf.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), data, compression)
    return buf.getvalue()


def reasons(result: ScanResult) -> list[tuple[str, str, str | None]]:
    return [(f.filename, f.reason, f.member) for f in result.findings]


# --- banned extensions -----------------------------------------------------------------

def test_exe_is_replaced_and_the_rewrite_parses_with_email() -> None:
    body = multipart(TEXT, attachment("invoice.exe", b"MZ\x90\x00" * 100))
    result = run(body)
    assert reasons(result) == [("invoice.exe", "banned extension .exe", None)]
    assert result.changed and result.findings[0].replace
    new, changes = rewritten(body, result)
    assert changes == ()
    msg = as_message(new)
    parts = [p for p in msg.walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/plain"]
    assert text_of(parts[0]) == "Hello there.\r\n"
    warning = parts[1]
    assert warning.get_filename() == "WARNING.TXT"
    assert warning["Content-Transfer-Encoding"] == "7bit"
    text = text_of(warning)
    assert "File name: invoice.exe\r\n" in text and f"saved as: {SAVED}\r\n" in text
    assert "banned extension .exe" in text and b"MZ" not in new and b"TVqQ" not in new
    assert new.startswith(b"--b\r\n" + TEXT + b"\r\n--b\r\n")


@pytest.mark.parametrize("name", ["x.EXE", "x.exe.", "x.exe . ", "doc.pdf.exe", "a.b.c.Scr",
                                  "x.exe\x00.txt", "dir\\sub\\run.bat"])
def test_banned_names(name: str) -> None:
    assert banned_extension(name, BANNED) is not None


def test_settings_normalise_extensions() -> None:
    assert DefangSettings(banned_exts=frozenset({"EXE", ".Scr", " com ", ""})).banned_exts == {
        "exe", "scr", "com"}


@pytest.mark.parametrize("name", ["exe", ".exe.txt", "x.exe.pdf", "report.pdf", "x.exes",
                                  "", "x.", "x.ex e"])
def test_harmless_names(name: str) -> None:
    assert banned_extension(name, BANNED) is None


@pytest.mark.parametrize("header", [
    b"Content-Type: application/octet-stream; name=\"a.txt\"\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''%C3%A9vil.exe\r\n",
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Disposition: attachment; filename*0*=utf-8''%C3%A9vil; filename*1=\".ex\";\r\n"
    b" filename*2=\"e\"\r\n",
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Disposition: attachment; filename=\"=?utf-8?B?w6l2aWwuZXhl?=\"\r\n",
    b"Content-Type: application/octet-stream; name=\"\xc3\xa9vil.exe\"\r\n",
    b"Content-Type: application/octet-stream; name=\"=?iso-8859-1?Q?=E9vil=2Eexe?=\"\r\n",
])
def test_encoded_names_are_decoded_before_the_check(header: bytes) -> None:
    body = multipart(header + b"\r\nMZ")
    result = run(body)
    assert reasons(result) == [("évil.exe", "banned extension .exe", None)]


def test_the_names_of_attached_messages_are_checked_even_unscanned() -> None:
    part = b"Content-Type: message/rfc822; name=\"fwd.scr\"\r\n\r\nSubject: hi\r\n\r\nbody\r\n"
    for settings in (ALL, DefangSettings(banned_exts=BANNED, scan_rfc822=False)):
        assert reasons(run(multipart(part), settings=settings)) == [
            ("fwd.scr", "banned extension .scr", None)]


# --- attached messages -----------------------------------------------------------------

INNER = (b"From: someone@example.com\r\nSubject: forwarded\r\n"
         b"Content-Type: multipart/mixed; boundary=\"in\"\r\n\r\n"
         + multipart(TEXT, attachment("evil.exe", b"MZ"), boundary=b"in"))


def test_exe_inside_an_attached_message_is_replaced_in_place() -> None:
    body = multipart(TEXT, b"Content-Type: message/rfc822\r\n\r\n" + INNER)
    result = run(body)
    assert reasons(result) == [("evil.exe", "banned extension .exe", None)]
    new, _ = rewritten(body, result)
    msg = as_message(new)
    inner = subparts(subparts(msg)[1])[0]
    assert inner["Subject"] == "forwarded"
    assert [p.get_filename() for p in inner.walk() if not p.is_multipart()] == [
        None, "WARNING.TXT"]
    assert run(body, settings=DefangSettings(banned_exts=BANNED, scan_rfc822=False)).findings == ()


def test_message_in_message_in_message() -> None:
    wrap = b"Content-Type: message/rfc822\r\n\r\n"
    body = multipart(wrap + b"Subject: outer\r\n" + wrap + b"Subject: mid\r\n" + wrap + INNER)
    result = run(body)
    assert reasons(result) == [("evil.exe", "banned extension .exe", None)]
    new, _ = rewritten(body, result)
    assert b"WARNING.TXT" in new and b"Subject: mid" in new and b"TVo=" not in new


def test_attached_message_that_is_itself_the_exe_replaces_the_message_part() -> None:
    inner = (b"Subject: x\r\nContent-Type: application/octet-stream; name=evil.exe\r\n"
             b"Content-Transfer-Encoding: base64\r\n\r\nTVo=\r\n")
    body = multipart(TEXT, b"Content-Type: message/rfc822\r\n\r\n" + inner)
    new, _ = rewritten(body, run(body))
    parts = [p for p in as_message(new).walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/plain"]
    assert parts[1].get_filename() == "WARNING.TXT" and b"Subject: x" not in new


def test_base64_encoded_attached_message_is_decoded_and_scanned() -> None:
    part = (b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + b64(INNER))
    body = multipart(TEXT, part)
    result = run(body)
    assert reasons(result) == [("evil.exe", "banned extension .exe", None)]
    new, _ = rewritten(body, result)
    assert new.count(b"WARNING.TXT") == 2 and b64(INNER)[:20] not in new
    clean = multipart(b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                      + b64(b"Subject: hi\r\nContent-Type: text/plain; charset=gb2312\r\n\r\nhi"))
    result = run(clean)
    assert result.findings == () and "gb2312" in result.charsets


def test_attached_messages_nested_too_deep_are_suspicious() -> None:
    wrap = b"Content-Type: message/rfc822\r\n\r\n"
    body = multipart(wrap * 12 + b"Subject: deep\r\n\r\nhi\r\n")
    result = run(body)
    assert reasons(result) == [("", "message nested too deep", None)]
    assert run(multipart(wrap * 9 + b"Subject: ok\r\n\r\nhi\r\n")).findings == ()


def test_multipart_nested_too_deep_is_suspicious_and_50_is_fine() -> None:
    def nested(depth: int) -> bytes:
        body = attachment("deepest.exe", b"MZ")
        for i in reversed(range(depth)):
            bd = b"n%d" % i
            body = (b"Content-Type: multipart/mixed; boundary=" + bd + b"\r\n\r\n"
                    + multipart(body, boundary=bd))
        return multipart(body)
    assert reasons(run(nested(50))) == [("deepest.exe", "banned extension .exe", None)]
    result = run(nested(120))
    assert reasons(result) == [("", "MIME nested too deep", None)]
    new, _ = rewritten(nested(120), result)
    assert b"deepest.exe" not in new and new.count(b"--n") == 99 * 2


def test_too_many_parts_replaces_the_whole_body() -> None:
    body = multipart(*[TEXT] * 2500)
    result = run(body)
    assert reasons(result) == [("", "too many MIME parts", None)]
    new, changes = rewritten(body, result)
    assert new.startswith(b"This message contained an attachment")
    assert ("Content-Type", 'text/plain; charset=us-ascii; name="WARNING.TXT"') in changes


# --- the top-level entity --------------------------------------------------------------

def test_non_multipart_message_that_is_the_attachment() -> None:
    headers = [("Subject", "invoice"),
               ("Content-Type", 'application/x-msdownload; name="setup.exe"'),
               ("Content-Transfer-Encoding", "base64")]
    body = b64(b"MZ" * 1000)
    result = run(body, headers)
    assert reasons(result) == [("setup.exe", "banned extension .exe", None)]
    new, changes = rewritten(body, result)
    assert changes == (
        ("Content-Type", 'text/plain; charset=us-ascii; name="WARNING.TXT"'),
        ("Content-Transfer-Encoding", "7bit"),
        ("Content-Disposition", 'inline; filename="WARNING.TXT"'),
        ("MIME-Version", "1.0"))
    assert new == warning_text(result.findings[0], SAVED)


def test_unreadable_body_is_suspicious_not_an_exception() -> None:
    class Broken(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise OSError("disk gone")
    result = scan(CT, Broken(b"--b\r\n"), ALL)
    assert reasons(result) == [("", "unscannable message", None)]
    assert result.notes == ("scanner error: OSError",)


# --- zip -------------------------------------------------------------------------------

def zip_part(data: bytes, name: str = "files.zip") -> bytes:
    return multipart(TEXT, attachment(name, data, "application/zip"))


@pytest.fixture(scope="session")
def zip_bomb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 50 MiB member of zeros, deflated to about 50 KB."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf, \
            zf.open("zeros.bin", "w") as member:
        block = bytes(1 << 20)
        for _ in range(50):
            member.write(block)
    return path


def test_zip_with_banned_member() -> None:
    body = zip_part(zip_bytes(("readme.txt", b"hi"), ("docs/evil.scr", b"MZ")))
    result = run(body)
    assert reasons(result) == [("files.zip", "zip member docs/evil.scr", "docs/evil.scr")]
    new, _ = rewritten(body, result)
    text = text_of(subparts(as_message(new))[1])
    assert "File name: files.zip\r\n" in text and "Inside the archive: docs/evil.scr\r\n" in text


def test_zip_in_zip_with_exe_names_the_path() -> None:
    inner = zip_bytes(("evil.exe", b"MZ"))
    body = zip_part(zip_bytes(("ok.txt", b"x"), ("inner.zip", inner)))
    assert reasons(run(body)) == [("files.zip", "zip member inner.zip/evil.exe",
                                   "inner.zip/evil.exe")]


def test_zip_found_by_name_or_by_type_only_when_enabled() -> None:
    data = zip_bytes(("evil.exe", b"MZ"))
    by_type = multipart(attachment("noname", data, "application/x-zip-compressed"))
    by_name = multipart(attachment("a.ZIP", data))
    assert len(run(by_type).findings) == 1 and len(run(by_name).findings) == 1
    assert run(by_name, settings=DefangSettings(banned_exts=BANNED)).findings == ()


def test_clean_and_empty_zips_are_fine() -> None:
    assert run(zip_part(zip_bytes(("a.txt", b"x"), ("b/c.pdf", b"y")))).findings == ()
    assert run(zip_part(zip_bytes())).findings == ()
    assert run(zip_part(zip_bytes(("empty.zip", b""), ("x.txt", b"")))).findings == ()


def test_zip_bomb(zip_bomb: Path) -> None:
    data = zip_bomb.read_bytes()
    assert len(data) < 200_000
    assert reasons(run(zip_part(data))) == [("files.zip", "zip bomb", "zeros.bin")]
    lenient = DefangSettings(banned_exts=BANNED, scan_zip=True, zip_max_ratio=10_000)
    assert run(zip_part(data), settings=lenient).findings == ()
    small_total = DefangSettings(banned_exts=BANNED, scan_zip=True, zip_max_ratio=10_000,
                                 zip_max_total=10 * 2**20)
    assert reasons(run(zip_part(data), settings=small_total)) == [
        ("files.zip", "zip bomb", None)]


def test_nested_zip_bomb_is_not_extracted(zip_bomb: Path) -> None:
    outer = zip_bytes(("bomb.zip", zip_bomb.read_bytes()), compression=zipfile.ZIP_STORED)
    tight = DefangSettings(banned_exts=BANNED, scan_zip=True, zip_max_total=2**20)
    assert reasons(run(zip_part(outer), settings=tight)) == [
        ("files.zip", "zip bomb", "bomb.zip")]


def nested_zip(depth: int) -> bytes:
    data = zip_bytes(("leaf.txt", b"x"))
    for i in reversed(range(depth - 1)):
        data = zip_bytes((f"level{i + 1}.zip", data))
    return data


def test_zip_nested_too_deep() -> None:
    assert run(zip_part(nested_zip(4))).findings == ()
    result = run(zip_part(nested_zip(6)))
    assert reasons(result) == [("files.zip", "zip nested too deep",
                                "level1.zip/level2.zip/level3.zip/level4.zip")]


def test_zip_loop_is_detected_by_content_hash() -> None:
    inner = zip_bytes(("a.txt", b"x"))
    outer = zip_bytes(("copy.zip", inner))
    digest = hashlib.sha256(inner).hexdigest()
    check = lambda n: banned_extension(n, BANNED)  # noqa: E731
    with tempfile.TemporaryFile() as fp:
        fp.write(outer)
        assert zipscan.inspect(fp, check, zipscan.ZipLimits()) is None
        assert zipscan.inspect(fp, check, zipscan.ZipLimits(), frozenset({digest})) == \
            zipscan.ZipProblem("zip loop", "copy.zip")


def test_identical_nested_zips_count_every_time() -> None:
    inner = zip_bytes(*[(f"f{i}.txt", b"x") for i in range(20)])
    ok = zip_bytes(*[(f"copy{i}.zip", inner) for i in range(40)])  # 40 + 40 * 20 members
    assert run(zip_part(ok)).findings == ()
    too_many = zip_bytes(*[(f"copy{i}.zip", inner) for i in range(50)])  # 50 + 50 * 20
    assert reasons(run(zip_part(too_many))) == [
        ("files.zip", "too many zip members", "copy47.zip")]


def test_too_many_members_counted_before_zipfile_reads_them() -> None:
    data = zip_bytes(*[(f"{i}.txt", b"") for i in range(1001)], compression=zipfile.ZIP_STORED)
    assert reasons(run(zip_part(data))) == [("files.zip", "too many zip members", None)]


def test_encrypted_zip() -> None:
    data = bytearray(zip_bytes(("secret.pdf", b"%PDF")))
    # flag bit 0x1 in the local header (offset 6) and the central directory entry (offset 8)
    data[6] |= 1
    cd = data.rindex(b"PK\x01\x02")
    data[cd + 8] |= 1
    assert reasons(run(zip_part(bytes(data)))) == [("files.zip", "encrypted zip", "secret.pdf")]


def test_corrupt_zip() -> None:
    good = zip_bytes(("a.txt", b"hello" * 100))
    for data in (b"MZ this is really an executable", good[:len(good) // 2],
                 good.replace(b"PK\x01\x02", b"PK\x01\x03")):
        assert reasons(run(zip_part(data))) == [("files.zip", "corrupt zip", None)]
    nested_bad = zip_bytes(("inner.zip", b"not a zip at all"))
    assert reasons(run(zip_part(nested_bad))) == [("files.zip", "corrupt zip", None)]


def test_quoted_printable_zip_is_decoded() -> None:
    data = quopri.encodestring(zip_bytes(("evil.vbs", b"x")))
    part = (b"Content-Type: application/zip; name=a.zip\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + data.replace(b"\n", b"\r\n"))
    assert reasons(run(multipart(part))) == [("a.zip", "zip member evil.vbs", "evil.vbs")]


def test_base64_with_garbage_and_concatenated_segments() -> None:
    data = zip_bytes(("evil.pif", b"x"))
    noisy = b"!!" + b64(data).replace(b"\r\n", b"\r\n  **\r\n") + b"===\r\n"
    part = (b"Content-Type: application/zip; name=a.zip\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + noisy)
    assert reasons(run(multipart(part))) == [("a.zip", "zip member evil.pif", "evil.pif")]


# --- HTML ------------------------------------------------------------------------------

def html_part(html: bytes, cte: str = "8bit", charset: str = "utf-8",
              ctype: str = "text/html", name: str = "") -> bytes:
    encoded = {"base64": b64(html), "8bit": html,
               "quoted-printable": quopri.encodestring(html).replace(b"\n", b"\r\n")}[cte]
    extra = f'; name="{name}"' if name else ""
    return (f"Content-Type: {ctype}; charset={charset}{extra}\r\n"
            f"Content-ID: <x@y>\r\nContent-Transfer-Encoding: {cte}\r\n\r\n").encode() + encoded


def cleaned_html(body: bytes) -> tuple[ScanResult, email.message.Message]:
    result = run(body)
    new, _ = rewritten(body, result)
    return result, as_message(new)


@pytest.mark.parametrize("cte", ["8bit", "base64", "quoted-printable"])
def test_scripts_removed_from_html(cte: str) -> None:
    html = ("<html><body><p>Gr\u00fc\u00dfe</p>\n<SCRIPT type='text/javascript'>\n"
            "document.write('x')</script ><p>after</p>\n</body></html>\n").encode()
    body = multipart(TEXT, html_part(html, cte))
    result, msg = cleaned_html(body)
    assert reasons(result) == [("", "script in HTML", None)] and not result.findings[0].replace
    part = subparts(msg)[1]
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert part["Content-ID"] == "<x@y>" and part.get_content_charset() == "utf-8"
    got = decoded(part).decode("utf-8")
    assert got == ("<html><body><p>Gr\u00fc\u00dfe</p>\r\n" + SCRIPT_WARNING
                   + "<p>after</p>\r\n</body></html>\r\n")


def test_html_keeps_undecodable_bytes_in_its_charset() -> None:
    html = b"<p>caf\xe9 \xff</p><script>x</script>\r\n<p>\x80</p>"
    result, msg = cleaned_html(multipart(html_part(html, "base64", "utf-8")))
    assert result.findings
    assert decoded(subparts(msg)[0]) == (
        b"<p>caf\xe9 \xff</p>" + SCRIPT_WARNING.encode() + b"\r\n<p>\x80</p>")
    html = "<p>\u4e2d\u6587</p><script>x</script>".encode("big5")
    _, msg = cleaned_html(multipart(html_part(html, "base64", "big5")))
    assert decoded(subparts(msg)[0]) == (
        "<p>\u4e2d\u6587</p>".encode("big5") + SCRIPT_WARNING.encode())


@pytest.mark.parametrize(("html", "expected", "count"), [
    ('<a href="JavaScript:go()" onClick="x()">hi</a>',
     '<a href="blocked:go()" data-bms-removed-onClick="x()">hi</a>', 2),
    ("<img src=x\n  onerror = y>", "<img src=x\n  data-bms-removed-onerror = y>", 1),
    ("<form action=' javascript :z'>", "<form action=' blocked :z'>", 1),
    ("<p>one=1 onion=2</p> online = yes", "<p>one=1 onion=2</p> online = yes", 0),
    ("<a title='x onclick=1'>", "<a title='x data-bms-removed-onclick=1'>", 1),  # harmless
    ("<a href=jav&#x61;script:x>", "<a href=jav&#x61;script:x>", 0),  # entities: left
])
def test_event_handlers_and_javascript_urls_are_disarmed(html: str, expected: str,
                                                         count: int) -> None:
    assert remove_scripts(html) == (expected, count)


def test_disarmed_html_part_is_rewritten() -> None:
    part = (b"Content-Type: text/html; charset=utf-8\r\n\r\n"
            b"<body onload=\"steal()\"><p>Gr\xc3\xbc\xc3\x9fe</p></body>")
    result, msg = cleaned_html(multipart(part))
    assert result.findings
    assert decoded(subparts(msg)[0]) == (
        b"<body data-bms-removed-onload=\"steal()\"><p>Gr\xc3\xbc\xc3\x9fe</p></body>")


def test_unterminated_and_line_split_scripts() -> None:
    assert remove_scripts("a<script\nsrc=x>b") == ("a" + SCRIPT_WARNING, 1)
    assert remove_scripts("a<ScRiPt>b</sCrIpT\n>c<script/>d") == (
        "a" + SCRIPT_WARNING + "c" + SCRIPT_WARNING, 2)
    assert remove_scripts("<scripts>x</scripts><p>") == ("<scripts>x</scripts><p>", 0)
    assert remove_scripts("<script>a</scriptx>b</script>c") == (SCRIPT_WARNING + "c", 1)
    assert remove_scripts("x<script") == ("x" + SCRIPT_WARNING, 1)
    # QP soft line break in the middle of the tag
    qp = b"<p>x</p><scr=\r\nipt>alert(1)</script>"
    part = b"Content-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + qp
    result, msg = cleaned_html(multipart(part))
    assert result.findings
    assert decoded(subparts(msg)[0]) == b"<p>x</p>" + SCRIPT_WARNING.encode()


def test_html_without_script_or_when_disabled_is_untouched() -> None:
    body = multipart(html_part(b"<p>hello <b>world</b></p>", "base64"))
    assert run(body).findings == ()
    scripted = multipart(html_part(b"<script>x</script>"))
    assert run(scripted, settings=DefangSettings(banned_exts=BANNED)).findings == ()


def test_octet_stream_named_html_is_cleaned() -> None:
    body = multipart(html_part(b"<script>x</script>", "base64", ctype="application/octet-stream",
                               name="page.HTM"))
    assert reasons(run(body)) == [("page.HTM", "script in HTML", None)]


def test_large_html_is_left_with_a_note() -> None:
    small = DefangSettings(banned_exts=BANNED, scan_html=True, html_max_bytes=100)
    result = run(multipart(html_part(b"<script>x</script>" + b"x" * 200)), settings=small)
    assert result.findings == () and "HTML part too large to clean" in result.notes


def test_top_level_html_message_is_cleaned_with_a_header_change() -> None:
    headers = [("Content-Type", "text/html; charset=iso-8859-1"), ("MIME-Version", "1.0")]
    body = b"<p>caf\xe9</p><script>evil()</script>\r\n"
    result = run(body, headers)
    new, changes = rewritten(body, result)
    assert changes == (("Content-Transfer-Encoding", "quoted-printable"),)
    assert new == b"<p>caf=E9</p>" + SCRIPT_WARNING.encode() + b"\r\n"


# --- warning text, charsets ------------------------------------------------------------

def test_warning_text_escapes_names() -> None:
    finding = Finding("evil\r\nInjected: yes\u4e2d\udce9\\.exe", "banned extension .exe",
                      "a\nb")
    text = warning_text(finding, "/save/\x1b[2Jx")
    assert text.isascii() and text.count(b"\r\n") == 5 and b"\n" not in text.replace(b"\r\n", b"")
    assert b"File name: evil\\x0d\\x0aInjected: yes\\u4e2d\\xe9\\\\.exe\r\n" in text
    assert b"Inside the archive: a\\x0ab\r\n" in text and b"/save/\\x1b[2Jx" in text
    assert escape_name("x" * 300).endswith("x...") and len(escape_name("x" * 300)) == 203


def test_charsets_of_text_parts_and_encoded_words() -> None:
    body = multipart(
        b"Content-Type: text/plain; charset=\"GB2312\"\r\n\r\nhi",
        b"Content-Type: application/pdf; name=\"=?big5?B?pKSk5Q==?=.pdf\"\r\n\r\nx",
        b"Content-Type: image/png; charset=koi8-r\r\n\r\nx",
        b"Content-Type: message/rfc822\r\n\r\nSubject: =?euc-kr?B?x=?=\r\n"
        b"Content-Type: text/html; charset=shift_jis\r\n\r\nhi")
    assert run(body).charsets == {"gb2312", "big5", "euc-kr", "shift_jis"}


# --- memory ----------------------------------------------------------------------------

@pytest.fixture
def big_body() -> Iterator[tempfile.SpooledTemporaryFile[bytes]]:
    """A 20 MiB zip attachment (stored random-ish data) in a spooled file on disk."""
    member = hashlib.sha256(b"seed").digest() * (15 * 2**20 // 32)
    data = zip_bytes(("data.bin", member), ("readme.txt", b"x"), compression=zipfile.ZIP_STORED)
    with tempfile.SpooledTemporaryFile(max_size=1 << 20) as fp:
        fp.write(b"--b\r\n" + TEXT + b"\r\n--b\r\nContent-Type: application/zip; name=big.zip\r\n"
                 b"Content-Transfer-Encoding: base64\r\n\r\n")
        view = memoryview(data)
        for i in range(0, len(data), 57 * 1000):
            fp.write(b64(view[i:i + 57 * 1000].tobytes()))
        fp.write(b"\r\n--b--\r\n")
        assert fp.tell() > 20 * 2**20
        del data, view, member
        yield fp


def test_20_mib_attachment_is_scanned_with_bounded_memory(
        big_body: tempfile.SpooledTemporaryFile[bytes]) -> None:
    tracemalloc.start()
    try:
        result = scan(CT, big_body, ALL)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.findings == () and result.notes == ()
    assert peak < 8 * 2**20, peak
    assert big_body.tell() == 0
