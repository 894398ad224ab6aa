"""Messages as an MTA stored them, whichever MTA it was.

:class:`StoredMessage` is what tests assert on: the envelope (sender,
recipients) and the header fields and body as the MTA will deliver them.
Postfix's Maildir files and sendmail's qf/df queue files both parse into it.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass, field
from email.utils import formatdate

_counter = itertools.count(1)


def split_headers(data: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """Split an RFC 5322 message (LF or CRLF) into unfolded header fields and the body.

    A field's value keeps its folding as ``\\n`` plus the continuation's
    whitespace, without the space after the colon."""
    text = data.replace(b"\r\n", b"\n")
    head, sep, body = text.partition(b"\n\n")
    if not sep:
        head, body = text, b""
    headers: list[tuple[str, str]] = []
    for raw in head.decode("utf-8", "surrogateescape").split("\n"):
        if not raw:
            continue
        if raw[:1] in (" ", "\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + "\n" + raw)
            continue
        name, _, value = raw.partition(":")
        headers.append((name, value.lstrip(" \t")))
    return headers, body


@dataclass
class StoredMessage:
    """One accepted message: envelope plus content, as the MTA keeps it."""

    sender: str
    recipients: list[str]
    headers: list[tuple[str, str]]
    body: bytes
    sources: list[str] = field(default_factory=list)  # the files it was read from
    # Per-recipient flags where the MTA records them (sendmail qf R lines).
    recipient_flags: dict[str, str] = field(default_factory=dict)

    def get_all(self, name: str) -> list[str]:
        """Values of every field called ``name`` (case-insensitive), in order."""
        key = name.lower()
        return [v for n, v in self.headers if n.lower() == key]

    def get(self, name: str) -> str | None:
        """The first value of the field ``name``, or None."""
        values = self.get_all(name)
        return values[0] if values else None

    def header_names(self) -> list[str]:
        return [n for n, _ in self.headers]

    def index(self, name: str) -> int:
        """Position of the first field called ``name`` (ValueError if absent)."""
        key = name.lower()
        for i, (n, _) in enumerate(self.headers):
            if n.lower() == key:
                return i
        raise ValueError(f"no {name} header in {self.header_names()}")

    @property
    def message_id(self) -> str | None:
        return self.get("Message-ID")

    @property
    def text(self) -> str:
        """The body as text with LF line ends."""
        return self.body.replace(b"\r\n", b"\n").decode("utf-8", "surrogateescape")


def new_message_id(tag: str = "t") -> str:
    """A Message-ID unique within this test run: ``<tag.N.PID.TIME@test.invalid>``."""
    return f"<{tag}.{next(_counter)}.{os.getpid()}.{time.time_ns()}@test.invalid>"


def make_message(subject: str = "test", body: str = "Hello.\n", *,
                 sender: str = "sender@example.test", to: str = "rcpt@example.test",
                 headers: list[tuple[str, str]] | None = None,
                 message_id: str | None = None) -> tuple[str, bytes]:
    """A small well-formed message: ``(message_id, bytes with CRLF line ends)``.

    Extra ``headers`` come after the standard ones, in order (duplicates kept)."""
    mid = message_id or new_message_id()
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        f"Date: {formatdate(localtime=False)}",
        f"Message-ID: {mid}",
    ]
    lines += [f"{n}: {v}" for n, v in headers or ()]
    text = "\r\n".join(lines) + "\r\n\r\n" + body.replace("\r\n", "\n").replace("\n", "\r\n")
    return mid, text.encode("utf-8")
