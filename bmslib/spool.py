"""One message as the milter receives it: the headers in order, the body in a
spooled temporary file (memory up to a threshold, then a file in tempdir), so
a 20 MB message never sits in memory.  Also saving a copy of the original to
tempdir (mode 0600, a unique name) before its body is replaced.

Header values are kept exactly as the MTA passed them (folds included; 8-bit
bytes as ``surrogateescape`` text, pymilter's convention), and written back
byte for byte by :meth:`MessageSpool.write_headers`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Sequence
from typing import IO

MEMORY_LIMIT = 1 << 20  # body bytes kept in memory before the spool rolls over to disk
COPY_CHUNK = 1 << 16

Header = tuple[str, str]


def header_bytes(name: str, value: str) -> bytes:
    """``Name: value`` + CRLF, the value's folds normalised to CRLF."""
    v = value.replace("\r\n", "\n").replace("\n", "\r\n")
    return f"{name}: {v}\r\n".encode("utf-8", "surrogateescape")


def write_headers(out: IO[bytes], headers: Iterable[Header]) -> None:
    for name, value in headers:
        out.write(header_bytes(name, value))


def copy_stream(src: IO[bytes], out: IO[bytes], chunk: int = COPY_CHUNK) -> int:
    """Copy ``src`` from its start to ``out`` in chunks; the byte count."""
    src.seek(0)
    total = 0
    while True:
        data = src.read(chunk)
        if not data:
            return total
        out.write(data)
        total += len(data)


class MessageSpool:
    """The headers and body of one message."""

    def __init__(self, tempdir: str | None = None, memory_limit: int = MEMORY_LIMIT) -> None:
        self.headers: list[Header] = []
        self.tempdir = tempdir or None
        self.memory_limit = memory_limit
        self._body: IO[bytes] | None = None
        self.body_size = 0

    @property
    def body(self) -> IO[bytes]:
        """The body file (opened on first use, so a message that never gets
        to its body holds no file)."""
        if self._body is None:
            self._body = tempfile.SpooledTemporaryFile(  # noqa: SIM115 - closed in close()
                max_size=self.memory_limit, dir=self.tempdir)
        return self._body

    def add_header(self, name: str, value: str) -> None:
        self.headers.append((name, value))

    def add_body(self, chunk: bytes) -> None:
        self.body.write(chunk)
        self.body_size += len(chunk)

    def write_message(self, out: IO[bytes], headers: Sequence[Header] | None = None) -> None:
        """The whole message (``headers`` or the received ones, a blank line,
        the body) to ``out``."""
        write_headers(out, self.headers if headers is None else headers)
        out.write(b"\r\n")
        copy_stream(self.body, out)

    def close(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None


def save_original(spool: MessageSpool, tempdir: str, prefix: str = "bms-") -> str:
    """Save the message to a new file in ``tempdir`` (mode 0600, a unique
    name that says when); its path.  Raises OSError."""
    fd, path = tempfile.mkstemp(prefix=prefix, suffix=".msg", dir=tempdir)
    try:
        with os.fdopen(fd, "wb") as out:
            spool.write_message(out)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    return path
