"""The mail archive: mbox (mboxrd, locking, rollback on a full disk) and Maildir."""

from __future__ import annotations

import errno
import io
import mailbox
import os
import pwd
import stat
import threading
import time
from pathlib import Path

import pytest

from bmslib.archive import (
    CHUNK,
    ArchiveError,
    LineEnds,
    MaildirArchive,
    MboxArchive,
    Writer,
    open_archive,
)

WHEN = 1_790_000_000.0  # a fixed time for the From_ line
HEADERS = [("From", "Alice <alice@example.com>"), ("Subject", "hello"),
           ("X-Folded", "one\r\n\ttwo")]


def body(text: bytes) -> io.BytesIO:
    """A spooled body as the milter keeps it: CRLF line ends, positioned anywhere."""
    f = io.BytesIO(text.replace(b"\n", b"\r\n"))
    f.seek(0, io.SEEK_END)
    return f


def from_line(sender: str) -> bytes:
    return f"From {sender} {time.asctime(time.localtime(WHEN))}\n".encode()


def user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


# --- line ends and >From escaping --------------------------------------------------------

def escaped(data: bytes, sizes: list[int]) -> bytes:
    lines = LineEnds(escape_from=True)
    out, pos = [], 0
    for size in sizes:
        out.append(lines.feed(data[pos:pos + size]))
        pos += size
    out.append(lines.feed(data[pos:], final=True))
    return b"".join(out)


SAMPLE = (b"From here\r\n>From there\r\nnot From x\r\n>>>From deep\r\n>>> From no\r\n"
          b"Fromage\r\n>\r\nFrom")
EXPECTED = (b">From here\n>>From there\nnot From x\n>>>>From deep\n>>> From no\n"
            b"Fromage\n>\nFrom")


def test_line_ends_escape_in_one_piece() -> None:
    assert escaped(SAMPLE, []) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_line_ends_escape_in_pieces_split_anywhere(size: int) -> None:
    assert escaped(SAMPLE, [size] * (len(SAMPLE) // size)) == EXPECTED


def test_line_ends_bare_cr_kept_and_crlf_split_across_chunks() -> None:
    assert escaped(b"a\rb\r", [2]) == b"a\rb\r"
    assert escaped(b"a\r\nFrom x\r\n", [2]) == b"a\n>From x\n"


def test_line_ends_long_gt_run_is_not_held() -> None:
    lines = LineEnds(escape_from=True)
    assert lines.feed(b">" * 100_000) == b">" * 100_000
    assert lines.feed(b"From x\n", final=True) == b">From x\n"


# --- mbox --------------------------------------------------------------------------------

def test_mbox_two_appends(tmp_path: Path) -> None:
    path = tmp_path / "archive.mbox"
    archive = MboxArchive(str(path))
    first = b"Hi,\nFrom the start\n>From quoted\nbye\n"
    second = b"no final newline"
    assert archive.append("<alice@example.com>", HEADERS, body(first), WHEN) == str(path)
    archive.append("<>", [("Subject", "two")], body(second), WHEN)

    assert path.read_bytes() == (
        from_line("alice@example.com")
        + b"From: Alice <alice@example.com>\nSubject: hello\nX-Folded: one\n\ttwo\n\n"
        + b"Hi,\n>From the start\n>>From quoted\nbye\n\n"
        + from_line("MAILER-DAEMON")
        + b"Subject: two\n\nno final newline\n\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    box = mailbox.mbox(str(path), create=False)
    try:
        messages = list(box)
        assert [m["Subject"] for m in messages] == ["hello", "two"]
        assert messages[0].get_payload() == "Hi,\n>From the start\n>>From quoted\nbye\n"
        assert messages[1].get_payload() == "no final newline\n"
        assert messages[0].get_from().startswith("alice@example.com ")
    finally:
        box.close()


def test_mbox_8bit_headers_written_as_the_original_bytes(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    raw = b"caf\xe9 \xa4\xa4".decode("utf-8", "surrogateescape")
    MboxArchive(str(path)).append("a@b.example", [("Subject", raw)], body(b"x\n"), WHEN)
    assert b"Subject: caf\xe9 \xa4\xa4\n" in path.read_bytes()


def test_mbox_header_value_cannot_add_header_lines(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    MboxArchive(str(path)).append("a@b.example", [("Subject", "x\nFrom evil\r\nX-Bad: 1")],
                                  body(b"x\n"), WHEN)
    data = path.read_bytes()
    assert b"Subject: x\n\tFrom evil\n\tX-Bad: 1\n\n" in data


def test_mbox_large_body_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    line = b"From a line that needs escaping, and some filler text.\n"
    big = line * (3 * CHUNK // len(line) + 7)
    MboxArchive(str(path)).append("a@b.example", [], body(big), WHEN)
    data = path.read_bytes()
    assert data == from_line("a@b.example") + b"\n" + b">" + big.replace(b"\nFrom", b"\n>From") \
        + b"\n"


def test_mbox_concurrent_appends_stay_whole(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    archive = MboxArchive(str(path))
    other = MboxArchive(str(path))  # a second archive object on the same file
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(25):
                text = f"thread {t} message {i}\n".encode() * (3000 * (i % 3) + 1)
                (archive if t % 2 else other).append(
                    f"t{t}@example.com", [("Subject", f"{t}-{i}")], body(text), WHEN)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []

    box = mailbox.mbox(str(path), create=False)
    try:
        seen = set()
        for message in box:
            t, i = map(int, str(message["Subject"]).split("-"))
            expected = f"thread {t} message {i}\n" * (3000 * (i % 3) + 1)
            assert message.get_payload() == expected
            assert message.get_from().startswith(f"t{t}@example.com ")
            seen.add((t, i))
    finally:
        box.close()
    assert len(seen) == 100


class FullDisk:
    """A writer over the archive's descriptor that runs out of space after
    ``limit`` bytes (the bytes before that do reach the file)."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd = fd
        self.left = limit

    def write(self, data: bytes, /) -> int:
        if self.left <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(self.fd, data[:self.left])
        self.left -= n
        return n


@pytest.mark.parametrize("limit", [0, 10, 200, CHUNK + 5])
def test_mbox_enospc_leaves_the_file_as_it_was(tmp_path: Path, limit: int) -> None:
    path = tmp_path / "mbox"
    MboxArchive(str(path)).append("a@b.example", HEADERS, body(b"first\n"), WHEN)
    before = path.read_bytes()

    def opener(fd: int) -> Writer:
        return FullDisk(fd, limit)

    full = MboxArchive(str(path), opener=opener)
    with pytest.raises(ArchiveError) as err:
        full.append("a@b.example", HEADERS, body(b"second\n" * 30_000), WHEN)
    assert str(path) in str(err.value)
    assert os.strerror(errno.ENOSPC) in str(err.value)
    assert path.read_bytes() == before

    MboxArchive(str(path)).append("a@b.example", HEADERS, body(b"third\n"), WHEN)
    assert path.read_bytes().startswith(before)
    assert path.read_bytes().endswith(b"third\n\n")


def test_mbox_body_read_error_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    path.write_bytes(b"")

    class Broken(io.BytesIO):
        def read(self, size: int | None = -1, /) -> bytes:
            if self.tell() > 0:
                raise OSError(errno.EIO, "spool read failed")
            return super().read(10)

    with pytest.raises(ArchiveError, match="spool read failed"):
        MboxArchive(str(path)).append("a@b.example", HEADERS, Broken(b"x" * 100), WHEN)
    assert path.read_bytes() == b""


def test_mbox_check_writable_creates_the_file(tmp_path: Path) -> None:
    path = tmp_path / "new.mbox"
    MboxArchive(str(path)).check_writable()
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_mbox_check_writable_names_path_and_user(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = blocker / "archive.mbox"  # the parent is a regular file
    with pytest.raises(ArchiveError) as err:
        MboxArchive(str(path)).check_writable()
    text = str(err.value)
    assert str(path) in text
    assert user() in text
    assert os.strerror(errno.ENOTDIR) in text
    assert "\n" not in text


def test_mbox_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "archive.mbox"
    with pytest.raises(ArchiveError, match="No such file or directory") as err:
        MboxArchive(str(path)).check_writable()
    assert user() in str(err.value)


def test_mbox_refuses_a_fifo(tmp_path: Path) -> None:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    archive = MboxArchive(str(path))
    with pytest.raises(ArchiveError):  # and does not hang waiting for a reader
        archive.check_writable()
    with pytest.raises(ArchiveError):
        archive.append("a@b.example", HEADERS, body(b"x\n"), WHEN)


def test_mbox_directory_is_not_writable(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match=str(tmp_path)):
        MboxArchive(str(tmp_path)).check_writable()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_mbox_read_only_directory(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ArchiveError, match="Permission denied"):
            MboxArchive(str(tmp_path / "mbox")).check_writable()
    finally:
        tmp_path.chmod(0o700)


# --- Maildir -----------------------------------------------------------------------------

def test_maildir_delivery(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    archive = MaildirArchive(str(root))
    where = archive.append("a@b.example", HEADERS, body(b"From me\nline\n"), WHEN)
    assert os.path.dirname(where) == str(root / "new")
    assert os.path.basename(where).startswith(f"{int(WHEN)}.{os.getpid()}.")
    assert Path(where).read_bytes() == (
        b"From: Alice <alice@example.com>\nSubject: hello\nX-Folded: one\n\ttwo\n\n"
        b"From me\nline\n")  # no From_ line and no escaping in a Maildir
    assert stat.S_IMODE(Path(where).stat().st_mode) == 0o600
    for sub in ("tmp", "new", "cur"):
        assert stat.S_IMODE((root / sub).stat().st_mode) == 0o700
    assert os.listdir(root / "tmp") == []

    archive.append("a@b.example", [("Subject", "two")], body(b"second"), WHEN)
    box = mailbox.Maildir(str(root), create=False)
    assert sorted(str(m["Subject"]) for m in box) == ["hello", "two"]


def test_maildir_failed_delivery_removes_the_tmp_file(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"

    def opener(fd: int) -> Writer:
        return FullDisk(fd, 20)

    with pytest.raises(ArchiveError, match=str(root)):
        MaildirArchive(str(root), opener=opener).append("a@b.example", HEADERS,
                                                        body(b"x\n" * 100), WHEN)
    assert os.listdir(root / "tmp") == []
    assert os.listdir(root / "new") == []


def test_maildir_check_writable(tmp_path: Path) -> None:
    root = tmp_path / "Maildir"
    MaildirArchive(str(root)).check_writable()
    assert sorted(os.listdir(root)) == ["cur", "new", "tmp"]
    assert os.listdir(root / "tmp") == []


def test_maildir_check_writable_names_path_and_user(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    root = blocker / "Maildir"
    with pytest.raises(ArchiveError) as err:
        MaildirArchive(str(root)).check_writable()
    assert str(root) in str(err.value)
    assert user() in str(err.value)


def test_maildir_concurrent_deliveries(tmp_path: Path) -> None:
    archive = MaildirArchive(str(tmp_path / "md"))

    def work(t: int) -> None:
        for i in range(25):
            archive.append("a@b.example", [("Subject", f"{t}-{i}")], body(b"x\n"), WHEN)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(os.listdir(tmp_path / "md" / "new")) == 100


# --- spec --------------------------------------------------------------------------------

def test_open_archive(tmp_path: Path) -> None:
    md = open_archive(f"maildir:{tmp_path}/md")
    assert isinstance(md, MaildirArchive)
    assert md.path == f"{tmp_path}/md"
    mbox = open_archive(f"{tmp_path}/archive")
    assert isinstance(mbox, MboxArchive)
    assert mbox.path == f"{tmp_path}/archive"
    with pytest.raises(ArchiveError):
        open_archive("maildir:")
    with pytest.raises(ArchiveError):
        open_archive("")
