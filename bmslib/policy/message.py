"""The content stage of a message (SPEC §4 header/eoh and eom): Subject and
From word lists and charsets at end of headers; MIME part charsets, defang
and recipient rewriting at end of message.

:func:`check_headers` answers at end of headers; :func:`finish` returns the
changes to make at end of message (header edits, a new body, recipients to
add and delete) or the reject.  Dry run evaluates everything and logs
``DRYRUN …`` lines, but changes nothing (SPEC §4a).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

from ..content.defang import DefangSettings, Finding, ScanResult, scan
from ..log import escape
from ..spool import MEMORY_LIMIT, MessageSpool
from . import content, recipients
from .address import Address, domain_parents
from .content import ContentSettings
from .decision import CONTINUE, Decision
from .edits import EomResult, HeaderEdit
from .recipients import RecipientSettings

log = logging.getLogger("bms")

Saver = Callable[[MessageSpool], str]


@dataclass(frozen=True)
class MessageSettings:
    content: ContentSettings = field(default_factory=ContentSettings)
    defang: DefangSettings | None = None  # None: attachments are not looked at
    recipients: RecipientSettings = field(default_factory=RecipientSettings)
    reject_virus_from: frozenset[str] = frozenset()  # [scrub] sender domains
    tempdir: str | None = None  # where originals of defanged mail are saved


@dataclass(frozen=True)
class Envelope:
    """What the content stage needs to know about the transaction."""

    sender: Address
    recipients: tuple[Address, ...]
    external: bool  # neither an internal client nor SMTP AUTH
    whitelisted: bool
    dry_run: bool = False


def first(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    key = name.lower()
    return next((v for h, v in headers if h.lower() == key), None)


def check_headers(settings: MessageSettings, env: Envelope,
                  headers: Sequence[tuple[str, str]]) -> Decision:
    """End of headers: unedited forwards (to the recipients who refuse them,
    from anyone), then for outside mail not whitelisted: Subject charset and
    words, From display-name words."""
    cs = settings.content
    subject = first(headers, "Subject")
    if subject is not None:
        d = content.check_forward(cs, subject, env.recipients)
        if d.final:
            return d
    if not env.external or env.whitelisted:
        return CONTINUE
    if subject is not None:
        d = content.check_subject(cs, subject)
        if d.final:
            return d
    author = first(headers, "From")
    if author is not None:
        return content.check_from(cs, author)
    return CONTINUE


def _describe(f: Finding) -> str:
    name = f.filename or "(no name)"
    return f"{name} in zip member {f.member}" if f.member else name


def _new_spool() -> IO[bytes]:
    return tempfile.SpooledTemporaryFile(max_size=MEMORY_LIMIT)  # closed by the caller


class _Eom:
    """The end-of-message work for one message."""

    def __init__(self, settings: MessageSettings, env: Envelope, spool: MessageSpool,
                 save: Saver | None) -> None:
        self.settings = settings
        self.env = env
        self.spool = spool
        self.save = save
        self.edits: list[HeaderEdit] = []
        self.body: IO[bytes] | None = None
        self.prefix = "DRYRUN " if env.dry_run else ""

    def run(self) -> Decision:
        st = self.settings
        need_charsets = self.env.external and not self.env.whitelisted \
            and bool(st.content.blocked_charsets)
        if st.defang is None and not need_charsets:
            return CONTINUE
        result = scan(self.spool.headers, self.spool.body,
                      st.defang or DefangSettings(banned_exts=frozenset()))
        for note in result.notes:
            log.info("MIME: %s", escape(note))
        if need_charsets:
            d = content.check_charsets(st.content, result.charsets, "a MIME part")
            if d.final:
                return d
        if st.defang is not None and result.changed:
            return self._defang(result)
        return CONTINUE

    def _defang(self, result: ScanResult) -> Decision:
        env = self.env
        names = ", ".join(_describe(f) for f in result.findings)
        reasons = "; ".join(f"{_describe(f)}: {f.reason}" for f in result.findings)
        virus_from = env.sender.qualified and any(
            d in self.settings.reject_virus_from for d in domain_parents(env.sender.domain))
        if virus_from and any(f.replace for f in result.findings):
            return Decision.reject(
                "virus", "Attachment type not allowed.",
                f"You sent {names}; send it as a link or in an archive we accept.",
                log=f"virus from {env.sender.mailbox}: {reasons}")
        if env.dry_run:
            log.info("DRYRUN DEFANG: %s", escape(reasons))
            return CONTINUE
        if self.save is None:
            saved = "(not saved: no tempdir)"
        else:
            try:
                saved = self.save(self.spool)
            except OSError as exc:
                return Decision.tempfail(
                    "defang", "Cannot save a copy of your message now; try again later.",
                    log=f"defang: cannot save the original in {self.settings.tempdir}: "
                        f"{exc.strerror or exc}")
        out = _new_spool()
        top = result.rewrite(self.spool.body, out, saved)
        self.body = out
        for f in result.findings:
            log.info("DEFANG: %s: %s; original saved as %s", escape(_describe(f)),
                     escape(f.reason), escape(saved))
        for name, value in top:
            if value is None:
                count = sum(1 for h, _ in self.spool.headers if h.lower() == name.lower())
                self.edits.extend(HeaderEdit("delete", name, index=i)
                                  for i in range(count, 0, -1))
            else:
                self.edits.append(HeaderEdit("change", name, value, 1))
        return CONTINUE

    def rewrite_recipients(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        plan = recipients.plan_recipients(self.settings.recipients, self.env.sender,
                                          self.env.recipients)
        for line in plan.log:
            log.info("%s%s", self.prefix, escape(line))
        if plan.empty or self.env.dry_run:
            return (), ()
        if plan.hide_path:
            count = sum(1 for h, _ in self.spool.headers if h.lower() == "received")
            self.edits.extend(HeaderEdit("delete", "Received", index=i)
                              for i in range(count, 0, -1))
        if plan.cc:
            self.edits.append(HeaderEdit("insert", "Cc", plan.cc, -1))
        return plan.add, plan.delete


def finish(settings: MessageSettings, env: Envelope, spool: MessageSpool,
           save: Saver | None) -> EomResult:
    """End of message: the reject, or the changes to make."""
    work = _Eom(settings, env, spool, save)
    d = work.run()
    if d.final:
        return EomResult(d)
    add, delete = work.rewrite_recipients()
    return EomResult(CONTINUE, tuple(work.edits), work.body, add, delete)
