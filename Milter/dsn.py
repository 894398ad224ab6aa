"""pymilter's ``Milter.dsn``: send a delivery status notification (bounce)
or do a call-back verification (CBV) to a MAIL FROM address, and build a
DSN message from a ``%(name)s`` template.

DSNs go only to MAIL FROM addresses, from the null sender ``<>`` unless
``ourfrom`` is given; a CBV is the same SMTP dialogue stopped after RCPT.
"""

from __future__ import annotations

import re
import smtplib
import time
from collections.abc import Iterable
from email.message import Message
from types import SimpleNamespace
from typing import Any

from . import __version__, dns

__all__ = ["Vars", "create_msg", "send_dsn"]

Failure = tuple[int, str]

#: Characters a template value may not carry into a header.
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]+")


def _reply(code: int, resp: bytes | str) -> Failure:
    text = resp.decode("utf-8", "replace") if isinstance(resp, bytes) else resp
    return code, text


def _one_or_all(bad: dict[str, Failure]) -> Failure | dict[str, Failure]:
    return next(iter(bad.values())) if len(bad) == 1 else bad


def _attempt(smtp: smtplib.SMTP, host: str, port: int, domain: str, receiver: str,
             mailfrom: str | list[str], msg: str | bytes | None,
             ourfrom: str) -> Failure | dict[str, Failure] | None:
    smtp.connect(host, port)
    code, resp = smtp.helo(receiver)
    words = resp.split()
    if not words:
        return 553, f"MX for {domain} has no hostname in banner: {host}"
    if words[0].decode("ascii", "replace") == receiver:
        return 553, f"Fraudulent MX for {domain}: {host}"
    if not 200 <= code <= 299:
        raise smtplib.SMTPHeloError(code, resp)
    if msg:
        try:
            smtp.sendmail(f"<{ourfrom}>", mailfrom, msg)
        except smtplib.SMTPSenderRefused:
            # Does not take the null sender: try postmaster (risking loops).
            smtp.sendmail(f"<postmaster@{receiver}>", mailfrom, msg)
        smtp.quit()
        return None
    code, resp = smtp.docmd(f"MAIL FROM:<{ourfrom}>")
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, resp, f"<{ourfrom}>")
    bad: dict[str, Failure] = {}
    for rcpt in [mailfrom] if isinstance(mailfrom, str) else mailfrom:
        code, resp = smtp.rcpt(rcpt)
        if code not in (250, 251):
            bad[rcpt] = _reply(code, resp)
    smtp.quit()
    return _one_or_all(bad) if bad else None


def send_dsn(mailfrom: str | list[str], receiver: str, msg: str | bytes | None = None,
             timeout: float = 600, session: Any = None, ourfrom: str = "",
             port: int = 25) -> Failure | dict[str, Failure] | None:
    """Send ``msg`` (an RFC 5322 message) to ``mailfrom``, or, when ``msg``
    is None, verify it (CBV).  ``receiver`` is our HELO name; ``session`` a
    :class:`Milter.dns.Session` to reuse.  The domain's MX hosts are tried
    in preference order (its A record when it has none) until ``timeout``
    seconds have passed.  ``mailfrom`` may be a list of addresses of one
    domain for a CBV.  Returns None on success, else (code, text) - or
    {address: (code, text)} when several recipients failed."""
    first = mailfrom if isinstance(mailfrom, str) else mailfrom[0]
    domain = first.rsplit("@", 1)[-1]
    sess = session if session is not None else dns.Session()
    try:
        mxlist = sorted(sess.dns(domain, "MX")) or [(0, domain)]
    except dns.DNSError:
        return 450, f"DNS Timeout: {domain} MX"
    deadline = time.time() + timeout
    for _prio, host in mxlist:
        smtp = smtplib.SMTP(timeout=max(1.0, deadline - time.time()))
        try:
            return _attempt(smtp, host, port, domain, receiver, mailfrom, msg, ourfrom)
        except smtplib.SMTPRecipientsRefused as x:
            refused = {r: _reply(*v) for r, v in x.recipients.items()}
            return _one_or_all(refused)
        except smtplib.SMTPSenderRefused as x:
            return _reply(x.smtp_code, x.smtp_error)
        except smtplib.SMTPDataError as x:
            return _reply(x.smtp_code, x.smtp_error)
        except (smtplib.SMTPException, OSError):
            pass  # any other failure: try the next MX
        finally:
            smtp.close()
        if time.time() > deadline:
            return 450, f"No MX response within {timeout / 60.0:f} minutes"
    return 450, "No MX servers available"


class Vars(SimpleNamespace):
    """A plain attribute holder for :func:`create_msg`'s substitutions."""


def _from_spf_query(q: Any) -> Any:
    """pyspf's ``spf.query`` attributes under the template's names."""
    v = Vars()
    try:
        v.heloname, v.sender, v.connectip = q.h, q.s, q.i
        v.receiver, v.sender_domain = q.r, q.o
        v.result, v.perm_error = q.result, q.perm_error
    except AttributeError:
        return q
    return v


def _values(v: Any) -> dict[str, Any]:
    return {k: (_CONTROLS.sub(" ", val) if isinstance(val, str) else val)
            for k, val in vars(v).items()}


def create_msg(v: Any, rcptlist: Iterable[str] | None = None, origmsg: Message | None = None,
               template: str | None = None) -> Message | None:
    """A DSN built from ``template`` (headers, a blank line, the body, with
    ``%(name)s`` fields taken from ``v``'s attributes; ``v`` needs at least
    ``sender`` and ``receiver``).  ``rcptlist`` sets ``rcpt``; ``origmsg``
    sets ``subject`` and ``spf_result``.  An ``spf.query`` is accepted as
    ``v``.  ``To``, ``From: postmaster@receiver`` and ``Auto-Submitted`` are
    added when missing.  None when there is no template."""
    if not template:
        return None
    if hasattr(v, "perm_error"):
        v = _from_spf_query(v)
    if rcptlist:
        v.rcpt = "\n\t".join(rcptlist)
    if origmsg is not None:
        v.subject = origmsg["Subject"] or "(none)"
        v.spf_result = origmsg["Received-SPF"]
    msg = Message()
    msg.add_header("X-Mailer", "PyMilter-" + __version__)
    msg.set_type("text/plain")
    head, _, body = template.partition("\n\n")
    fields = _values(v)
    for line in head.splitlines():
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"DSN template header line without a colon: {line!r}")
        msg.add_header(name, _CONTROLS.sub(" ", value % fields).strip())
    msg.set_payload(body % vars(v))
    if "to" not in msg:
        msg.add_header("To", fields["sender"])
    if "from" not in msg:
        msg.add_header("From", f"postmaster@{fields['receiver']}")
    if "auto-submitted" not in msg:
        msg.add_header("Auto-Submitted", "auto-generated")
    return msg
