"""The mail archive (``[wiretap] archive``): every accepted message appended
to an mbox file or delivered into a Maildir (SPEC §4 "eom", inventory §2.6
step 11).

The message written is the headers as the milter got them (``name: value``,
8-bit bytes restored from their surrogate escapes, folds kept as folds),
a blank line, and the body, with LF line ends.  The body is read from a
seekable binary file (CRLF line ends, as spooled by the milter) in chunks
from position 0; it is never held in memory whole.

mbox (mboxrd): a ``From <sender> <asctime>`` line starts each message, any
line matching ``^>*From `` gets one more ``>``, a blank line ends it.  The
file is opened ``O_APPEND|O_CREAT`` (mode 0600) and locked while writing —
a ``threading.Lock`` per archive object for the threads of this process,
``flock`` for other archive objects and processes, ``lockf`` (POSIX record
lock) for other mbox writers — and synced before it is unlocked.  When a
write fails (ENOSPC, EIO, a body read error), the file is cut back to its
size before the message, so no half message stays, and :class:`ArchiveError`
is raised.

Maildir: ``tmp/``, ``new/``, ``cur/`` are made (0700) when missing; the
message is written to ``tmp/<time>.<pid>.<random>.<host>`` (O_EXCL, 0600),
synced, and renamed into ``new/``.  A failed delivery removes its tmp file.

:meth:`Archive.check_writable` is the startup check: a permission problem is
reported when the daemon starts, naming the path and the user the daemon
runs as, not discovered weeks later.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import pwd
import re
import secrets
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Protocol

CHUNK = 65536


class ArchiveError(Exception):
    """The archive could not be written; the message is one line naming the path."""


class Archive(Protocol):
    def check_writable(self) -> None:
        """Raise :class:`ArchiveError` naming the path, the user and the OS
        reason when the archive cannot be written."""

    def append(self, sender: str, headers: Sequence[tuple[str, str]], body: IO[bytes],
               when: float) -> str:
        """Store one message (envelope ``sender``, ``when`` as a Unix time);
        returns where it went, for the log.  Raises :class:`ArchiveError`."""


class Writer(Protocol):
    """Where the bytes go: a raw file over the archive's descriptor."""

    def write(self, data: bytes, /) -> int | None: ...


Opener = Callable[[int], Writer]


def fd_writer(fd: int) -> Writer:
    """The default :data:`Opener`: unbuffered writes to ``fd`` (not closed)."""
    return io.FileIO(fd, "w", closefd=False)


def current_user() -> str:
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _one_line(text: str) -> str:
    return re.sub(r"[\r\n]+", " ", text)


def _error(path: str, what: str, exc: OSError | None = None, user: bool = False) -> ArchiveError:
    text = f"mail archive {path}: {what}"
    if user:
        text += f" (running as user {current_user()})"
    if exc is not None:
        text += f": {_reason(exc)}"
    return ArchiveError(_one_line(text))


# --- message bytes -----------------------------------------------------------------------

def _to_bytes(text: str) -> bytes:
    """``text`` as the bytes the MTA sent (surrogate escapes back to 8-bit)."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace")


_BARE_LINE = re.compile(rb"\n(?![ \t])")


def header_block(headers: Sequence[tuple[str, str]]) -> bytes:
    """``name: value`` lines and the blank line, LF line ends.  A line break
    inside a value that is not a fold is made one (a tab is inserted), so a
    value cannot add header lines of its own to the archive."""
    out = bytearray()
    for name, value in headers:
        v = _to_bytes(value).replace(b"\r\n", b"\n").rstrip(b"\r\n")
        v = _BARE_LINE.sub(b"\n\t", v)
        sep = b":" if v[:1] in (b" ", b"\t") or not v else b": "
        out += _to_bytes(name).replace(b"\r", b"").replace(b"\n", b"") + sep + v + b"\n"
    out += b"\n"
    return bytes(out)


_FROM_LINE = re.compile(rb"^(>*)(From )", re.MULTILINE)
_FROM = b"From "


class LineEnds:
    """Streaming CRLF -> LF conversion, optionally with mboxrd escaping (one
    more ``>`` on every line matching ``^>*From ``), over chunks of any size
    split anywhere; holds back at most a CR and four bytes of a line."""

    def __init__(self, escape_from: bool) -> None:
        self.escape_from = escape_from
        self._cr = False  # the previous chunk ended with CR
        self._held = b""  # start of a line that may become "From " (after its '>'s)
        self._mid_line = False  # the current line is past its '>' run
        self.last = b"\n"  # last byte passed on (b"\n" before anything)

    def feed(self, chunk: bytes, final: bool = False) -> bytes:
        data = (b"\r" if self._cr else b"") + chunk
        self._cr = not final and data.endswith(b"\r")
        if self._cr:
            data = data[:-1]
        data = data.replace(b"\r\n", b"\n")
        out = self._escape(data, final) if self.escape_from else data
        if out:
            self.last = out[-1:]
        return out

    def _escape(self, data: bytes, final: bool) -> bytes:
        data = self._held + data
        self._held = b""
        out: list[bytes] = []
        if self._mid_line:
            nl = data.find(b"\n")
            if nl < 0:
                return data
            out.append(data[:nl + 1])
            data = data[nl + 1:]
            self._mid_line = False
        end = data.rfind(b"\n") + 1
        out.append(_FROM_LINE.sub(rb"\1>\2", data[:end]))
        rest = data[end:]  # a line started, not finished
        after = rest.lstrip(b">")
        run = rest[:len(rest) - len(after)]
        if after.startswith(_FROM):
            out.append(run + b">" + after)
            self._mid_line = True
        elif not final and _FROM.startswith(after):
            out.append(run)  # '>'s may be passed on: the extra one can go anywhere in the run
            self._held = after
        else:
            out.append(rest)
            self._mid_line = bool(after)
        return b"".join(out)


def message_chunks(headers: Sequence[tuple[str, str]], body: IO[bytes],
                   lines: LineEnds) -> Iterator[bytes]:
    """The message (headers, blank line, body) through ``lines``, ending with
    a line end, in pieces of about :data:`CHUNK` bytes."""
    pending = bytearray(lines.feed(header_block(headers)))
    body.seek(0)
    while True:
        chunk = body.read(CHUNK)
        if not chunk:
            break
        pending += lines.feed(chunk)
        if len(pending) >= CHUNK:
            yield bytes(pending)
            pending.clear()
    pending += lines.feed(b"", final=True)
    if lines.last != b"\n":
        pending += b"\n"
    yield bytes(pending)


def _write_all(writer: Writer, data: bytes) -> None:
    while data:
        n = writer.write(data)
        if not n or n < 0:
            raise OSError(errno.EIO, "write returned nothing")
        data = data[n:]


def from_line(sender: str, when: float) -> bytes:
    """``From <sender or MAILER-DAEMON> <asctime in local time>``, LF-ended."""
    who = re.sub(r"\s+", "_", sender.strip().strip("<>").strip()) or "MAILER-DAEMON"
    return b"From " + _to_bytes(who) + b" " + time.asctime(time.localtime(when)).encode() + b"\n"


# --- mbox --------------------------------------------------------------------------------

class MboxArchive:
    """An mbox file (mboxrd), appended to under locks; see the module text."""

    def __init__(self, path: str, *, opener: Opener = fd_writer) -> None:
        if not path:
            raise ArchiveError("mail archive: empty path")
        self.path = path
        self._opener = opener
        self._lock = threading.Lock()

    def _open(self) -> int:
        """The file for appending, created 0600 when missing.  O_NONBLOCK: a
        FIFO in its place fails at once instead of hanging the thread."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK
                     | os.O_CLOEXEC, 0o600)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")
        except OSError:
            os.close(fd)
            raise
        return fd

    def check_writable(self) -> None:
        """Open (creating) the file for appending; the directory must exist."""
        try:
            os.close(self._open())
        except OSError as exc:
            what = "cannot open for appending"
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                what += f" in {os.path.dirname(self.path) or '.'}"
            raise _error(self.path, what, exc, user=True) from exc

    def append(self, sender: str, headers: Sequence[tuple[str, str]], body: IO[bytes],
               when: float) -> str:
        with self._lock:
            try:
                fd = self._open()
            except OSError as exc:
                raise _error(self.path, "cannot open for appending", exc, user=True) from exc
            try:
                self._locked_append(fd, sender, headers, body, when)
            finally:
                os.close(fd)
        return self.path

    def _locked_append(self, fd: int, sender: str, headers: Sequence[tuple[str, str]],
                       body: IO[bytes], when: float) -> None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            fcntl.lockf(fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise _error(self.path, "cannot lock", exc) from exc
        try:
            size = os.fstat(fd).st_size
            try:
                writer = self._opener(fd)
                _write_all(writer, from_line(sender, when))
                for piece in message_chunks(headers, body, LineEnds(escape_from=True)):
                    _write_all(writer, piece)
                _write_all(writer, b"\n")
                os.fsync(fd)
            except BaseException as exc:
                try:
                    os.ftruncate(fd, size)
                except OSError:
                    pass
                if isinstance(exc, OSError):
                    raise _error(self.path, "append failed, message removed", exc) from exc
                raise
        finally:
            try:
                fcntl.lockf(fd, fcntl.LOCK_UN)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)


# --- Maildir -----------------------------------------------------------------------------

def _unique_name(when: float) -> str:
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"
    return f"{int(when)}.{os.getpid()}.{secrets.token_hex(8)}.{host}"


class MaildirArchive:
    """A Maildir: delivery to ``tmp/`` then rename into ``new/``; several
    threads or processes may deliver at once (names are unique)."""

    def __init__(self, path: str, *, opener: Opener = fd_writer) -> None:
        if not path:
            raise ArchiveError("mail archive: empty maildir path")
        self.path = path
        self._opener = opener

    def _make_dirs(self) -> None:
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(self.path, sub), mode=0o700, exist_ok=True)

    def check_writable(self) -> None:
        try:
            self._make_dirs()
        except OSError as exc:
            raise _error(self.path, "cannot make tmp/, new/ and cur/", exc, user=True) from exc
        probe = os.path.join(self.path, "tmp", _unique_name(time.time()) + ".probe")
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                             0o600))
            os.unlink(probe)
        except OSError as exc:
            raise _error(self.path, "cannot create files in tmp/", exc, user=True) from exc

    def append(self, sender: str, headers: Sequence[tuple[str, str]], body: IO[bytes],
               when: float) -> str:
        """``sender`` is not written (a Maildir message has no From_ line)."""
        name = _unique_name(when)
        tmp = os.path.join(self.path, "tmp", name)
        new = os.path.join(self.path, "new", name)
        try:
            self._make_dirs()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _error(self.path, "cannot deliver", exc, user=True) from exc
        try:
            try:
                writer = self._opener(fd)
                for piece in message_chunks(headers, body, LineEnds(escape_from=False)):
                    _write_all(writer, piece)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, new)
        except BaseException as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise _error(self.path, "delivery failed", exc) from exc
            raise
        _sync_dir(os.path.join(self.path, "new"))
        return new


def _sync_dir(path: str) -> None:
    """Make a rename durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_archive(spec: str) -> Archive:
    """``maildir:/path`` is a Maildir; anything else is an mbox path."""
    if spec.startswith("maildir:"):
        return MaildirArchive(spec[len("maildir:"):])
    return MboxArchive(spec)
