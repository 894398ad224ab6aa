"""What a policy step decides, and what the access file says.

A :class:`Decision` is the outcome of one check: an action, the SMTP reply to
send with it, and the reason tag and text for the one log line an admin
greps for (``REJECT: <log>``).  ``delay`` marks a reject that may wait until
DATA so that every recipient is still logged (SPEC §4a); the zombie-PC,
private_relay, check_user and greylisting rejects are never delayed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .. import safetext


class Action(enum.Enum):
    CONTINUE = "CONTINUE"
    ACCEPT = "ACCEPT"
    REJECT = "REJECT"
    TEMPFAIL = "TEMPFAIL"
    DISCARD = "DISCARD"


@dataclass(frozen=True)
class Decision:
    action: Action
    tag: str = ""  # stable reason tag, e.g. "zombie PC", "SPF fail", "CBV"
    code: str = ""  # SMTP reply code, "550"
    xcode: str = ""  # enhanced status code, "5.7.1"
    lines: tuple[str, ...] = ()  # reply text lines
    log: str = ""  # text after "REJECT: " in milter.log (defaults to the tag)
    delay: bool = False  # may be answered at DATA instead (never dropped)

    @property
    def final(self) -> bool:
        return self.action is not Action.CONTINUE

    @classmethod
    def reject(cls, tag: str, *lines: str, code: str = "550", xcode: str = "5.7.1",
               log: str = "", delay: bool = False) -> Decision:
        return cls(Action.REJECT, tag, code, xcode, tuple(map(reply_line, lines)), log or tag,
                   delay)

    @classmethod
    def tempfail(cls, tag: str, *lines: str, code: str = "451", xcode: str = "4.3.0",
                 log: str = "", delay: bool = False) -> Decision:
        return cls(Action.TEMPFAIL, tag, code, xcode, tuple(map(reply_line, lines)),
                   log or tag, delay)


CONTINUE = Decision(Action.CONTINUE)

# One line of reply text: printable ASCII, at most MAX_REPLY_LINE bytes
# (bmslib.safetext; a line may quote a hostile address or HELO).
reply_line = safetext.reply_line
MAX_REPLY_LINE = safetext.MAX_REPLY_LINE


class AccessKind(enum.Enum):
    """Right-hand sides of the sendmail access file (SPEC §5)."""

    OK = "OK"
    CBV = "CBV"
    DSN = "DSN"
    REJECT = "REJECT"
    TEMPFAIL = "TEMPFAIL"
    WHITELIST = "WHITELIST"
    BLACKLIST = "BLACKLIST"
    BAN = "BAN"
    DISCARD = "DISCARD"
    QUARANTINE = "QUARANTINE"  # the milter quarantine action (DMARC-* keys)
    ERROR = "ERROR"  # ERROR:"550 5.7.1 text" / ERROR:5.7.1:550 text: sent as written


@dataclass(frozen=True)
class AccessValue:
    kind: AccessKind
    code: str = ""  # ERROR only
    xcode: str = ""  # ERROR only
    text: str = ""  # ERROR only

    def error_decision(self, tag: str, log: str = "") -> Decision:
        """The reply an ``ERROR:`` value asks for, as written."""
        action = Action.TEMPFAIL if self.code.startswith("4") else Action.REJECT
        lines = (self.text,) if self.text else ()
        return Decision(action, tag, self.code, self.xcode, lines, log or tag)
