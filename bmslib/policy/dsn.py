"""DSN templates and the notices built from them (SPEC §4a "DSN templates").

A template is ``<name>.txt``: header lines, a blank line, then the body, with
``%(var)s`` fields from :data:`VARIABLES` (a literal percent sign is ``%%``).
The shipped templates live in ``bmslib/templates``; a file of the same name in
``datadir`` replaces one.  Templates are checked when they are loaded (at
startup, not when a notice is due): an unknown field, any other ``%``
conversion or a malformed header line raises :class:`TemplateError` naming
the file.

:func:`build_message` fills a template with untrusted values (a Subject, a
HELO name) made safe first: one line, no control characters, bounded length;
non-ASCII text is encoded by the :mod:`email` package (RFC 2047 headers,
quoted-printable body), so the result is 7-bit RFC 5322 with CRLF line ends.
It adds ``To``, ``From: postmaster@<receiver>``, ``Date``, ``Message-ID``
and ``Auto-Submitted: auto-generated`` (RFC 3834) when the template has none.
"""

from __future__ import annotations

import email.policy
import email.utils
import functools
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from importlib import resources
from typing import Final

# The names a DSN policy asks for (the SPF result, or "strike3"/"heloerror").
TEMPLATE_NAMES: Final = (
    "fail", "softfail", "neutral", "permerror", "temperror", "strike3", "heloerror",
)

VARIABLES: Final = frozenset({
    "sender",  # the MAIL FROM address
    "receiver",  # our host name (macro j)
    "sender_domain",  # the MAIL FROM domain
    "heloname",  # the client's HELO/EHLO name
    "connectip",  # the client's IP address
    "result",  # the SPF result that asked for the notice
    "perm_error",  # the SPF permerror explanation
    "rcpt",  # the recipients of the message
    "subject",  # the message's Subject
    "spf_result",  # the value of our Received-SPF header
})

# Headers the builder owns: the body encoding is chosen per message.
_RESERVED: Final = frozenset({"mime-version", "content-type", "content-transfer-encoding"})
_SINGLE: Final = frozenset({"to", "from", "subject", "date", "message-id", "auto-submitted",
                            "reply-to", "sender", "cc", "bcc"})
_FIELD_NAME = re.compile(r"[!-9;-~]+\Z")  # RFC 5322 ftext
_FIELD = re.compile(r"%(?:%|\((?P<name>[^)]*)\)(?P<conv>[a-zA-Z]?))")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
MAX_VALUE: Final = 500  # characters of one variable's value

# 7-bit output: non-ASCII headers as encoded words, a non-ASCII body as
# quoted-printable or base64, so no SMTP extension is needed to send it.
_POLICY: Final = email.policy.SMTP.clone(cte_type="7bit")


class TemplateError(ValueError):
    """A template that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Template:
    name: str  # "fail"
    path: str  # where it was read from (for logs and errors)
    headers: tuple[tuple[str, str], ...]  # (field name, value with %(var)s fields)
    body: str

    @property
    def filename(self) -> str:
        return os.path.basename(self.path)


def _check_fields(text: str, where: str) -> None:
    """Every ``%`` must start ``%%`` or ``%(known)s``."""
    i = text.find("%")
    while i >= 0:
        m = _FIELD.match(text, i)
        if m is None or (m.group("name") is not None and m.group("conv") != "s"):
            snippet = text[i:i + 20].split("\n")[0]
            raise TemplateError(f"{where}: bad field {snippet!r}: write %(name)s, or %% "
                                f"for a percent sign")
        name = m.group("name")
        if name is not None and name not in VARIABLES:
            raise TemplateError(f"{where}: unknown field %({name})s; known fields: "
                                + ", ".join(sorted(VARIABLES)))
        i = text.find("%", m.end())


def parse_template(text: str, *, name: str, path: str) -> Template:
    """A template from its text; raises :class:`TemplateError` naming ``path``."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    head, sep, body = text.partition("\n\n")
    if not sep:
        if text.startswith("\n"):
            head, body = "", text[1:]
        else:
            raise TemplateError(f"{path}: no blank line between the headers and the body")
    headers: list[tuple[str, str]] = []
    seen: set[str] = set()
    for lineno, line in enumerate(head.split("\n") if head else [], start=1):
        if line[:1] in (" ", "\t"):
            if not headers:
                raise TemplateError(f"{path}, line {lineno}: continuation line without a header")
            field, value = headers[-1]
            headers[-1] = (field, value + " " + line.strip())
            continue
        field, colon, value = line.partition(":")
        if not colon or not _FIELD_NAME.match(field):
            raise TemplateError(f"{path}, line {lineno}: not a header line: {line[:40]!r}")
        key = field.lower()
        if key in _RESERVED:
            raise TemplateError(f"{path}, line {lineno}: {field} is set by bms, not the template")
        if key in _SINGLE and key in seen:
            raise TemplateError(f"{path}, line {lineno}: {field} given twice")
        seen.add(key)
        headers.append((field, value.strip()))
    for field, value in headers:
        _check_fields(value, f"{path}, header {field}")
    _check_fields(body, path)
    return Template(name, path, tuple(headers), body)


@functools.cache
def shipped_template(name: str) -> tuple[str, str] | None:
    """``(text, path)`` of a template shipped with bms, read once (before the
    daemon switches users: bmslib.preload)."""
    res = resources.files("bmslib").joinpath("templates").joinpath(f"{name}.txt")
    if not res.is_file():
        return None
    return res.read_text(encoding="utf-8"), str(res)


def load_templates(datadir: str | None,
                   names: Collection[str] = TEMPLATE_NAMES) -> dict[str, Template]:
    """``datadir/<name>.txt`` where it exists, else the shipped template, for
    each of ``names``.  A name with neither is left out (a plain CBV is done
    instead).  Raises :class:`TemplateError` for the first bad file."""
    out: dict[str, Template] = {}
    for name in names:
        found: tuple[str, str] | None = None
        if datadir:
            path = os.path.join(datadir, f"{name}.txt")
            try:
                with open(path, encoding="utf-8") as f:
                    found = f.read(), path
            except FileNotFoundError:
                pass
            except (OSError, UnicodeDecodeError) as exc:
                raise TemplateError(f"{path}: cannot read: {exc}") from exc
        if found is None:
            found = shipped_template(name)
        if found is not None:
            out[name] = parse_template(found[0], name=name, path=found[1])
    return out


def clean_value(value: str | Collection[str], limit: int = MAX_VALUE) -> str:
    """An untrusted value made safe for a header or a body line: a list joined
    with ", ", surrogates (undecodable bytes) as U+FFFD, runs of control
    characters (CR, LF, TAB…) as one space, cut at ``limit`` characters."""
    if not isinstance(value, str):
        value = ", ".join(str(v) for v in value)
    value = _SURROGATE.sub("\ufffd", value)
    value = _CONTROL.sub(" ", value).strip()
    if len(value) > limit:
        value = value[:limit - 3] + "..."
    return value


def build_message(template: Template, variables: Mapping[str, str | Collection[str]], *,
                  to: str, receiver: str, now: float, message_id: str | None = None) -> bytes:
    """The notice as bytes ready for DATA (CRLF, not dot-stuffed).

    ``to`` is the recipient's RFC 5321 path (``local@domain``, local part
    quoted if needed); ``receiver`` our host name; ``now`` the time for Date;
    ``message_id`` (``local@domain``, no brackets) the Message-ID to use.
    Values missing from ``variables`` are empty; a name not in
    :data:`VARIABLES` raises ValueError (a caller's typo)."""
    unknown = set(variables) - VARIABLES
    if unknown:
        raise ValueError("unknown DSN variables: " + ", ".join(sorted(unknown)))
    raw = dict(variables)
    rcpt = raw.get("rcpt", "")
    if isinstance(rcpt, str):  # the pipeline joins the recipients with TAB
        raw["rcpt"] = [r for r in rcpt.split("\t") if r.strip()]
    values = {name: clean_value(raw.get(name, "")) for name in VARIABLES}
    msg = EmailMessage(policy=_POLICY)
    for field, value in template.headers:
        msg[field] = clean_value(value % values, limit=2 * MAX_VALUE)
    host = receiver.rstrip(".") or "localhost"
    if "To" not in msg:
        msg["To"] = to
    if "From" not in msg:
        msg["From"] = f"postmaster@{host}"
    if "Date" not in msg:
        msg["Date"] = email.utils.format_datetime(datetime.fromtimestamp(now, timezone.utc))
    if "Message-ID" not in msg:
        # domain given: make_msgid would otherwise ask socket.getfqdn().
        msg["Message-ID"] = (f"<{message_id}>" if message_id
                             else email.utils.make_msgid("bms", domain=host))
    if "Auto-Submitted" not in msg:
        msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(template.body % values)
    return msg.as_bytes(policy=_POLICY)
