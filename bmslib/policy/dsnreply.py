"""Replies to our own DSNs (inventory §2.5 "Delayed-bounce detection").

With SRS on, every DSN bms sends has an SRS-signed Message-ID made from the
address it was sent to (``<SRS0=hash=tt=domain=user@fwdomain>``).  When that
address was forged, what comes back (a delivery report to our postmaster,
an autoreply, a complaint) quotes the Message-ID in ``References`` /
``In-Reply-To`` or in the returned headers in its body.  A valid signature
proves the reply is about a DSN we sent: the sender we notified is then
blacklisted, and the reply itself is discarded (nobody needs to read it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import IO

from .srs import Srs


def message_id(srs: Srs, mailbox: str) -> str | None:
    """The Message-ID (no brackets) of a DSN to ``mailbox``: its SRS address."""
    try:
        return srs.forward(mailbox)
    except ValueError:  # no domain: a plain Message-ID then
        return None

SCAN_BYTES = 256 << 10  # of the body: the returned headers come first in a report

_MSGID = re.compile(rb"<(SRS[01][=+-][^<>@\s]{1,400}@[A-Za-z0-9.-]{1,253})>", re.IGNORECASE)
_HEADERS = ("references", "in-reply-to", "message-id")


def is_candidate(null_sender: bool, recipients: Sequence[str],
                 headers: Sequence[tuple[str, str]]) -> bool:
    """A bounce, mail to a postmaster, or a delivery-status report."""
    if null_sender or any(r.lower().startswith("postmaster@") for r in recipients):
        return True
    return any(name.lower() == "content-type" and "delivery-status" in value.lower()
               for name, value in headers)


def find_dsn_target(srs: Srs, headers: Sequence[tuple[str, str]], body: IO[bytes]
                    ) -> str | None:
    """The address one of our DSNs went to, when this message refers to it
    by its SRS-signed Message-ID (checked: a forged one does not count)."""
    texts = [v.encode("utf-8", "surrogateescape") for n, v in headers
             if n.lower() in _HEADERS]
    body.seek(0)
    texts.append(body.read(SCAN_BYTES))
    body.seek(0, 2)
    fwdomain = srs.settings.fwdomain.lower()
    for text in texts:
        for match in _MSGID.finditer(text):
            address = match.group(1).decode("ascii", "replace")
            if address.rpartition("@")[2].lower() != fwdomain:
                continue
            original = srs.reverse(address)
            if original is not None:
                return original
    return None
