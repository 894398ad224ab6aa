"""One "MX host" of the test bed: a real ``bms`` daemon behind its own real
Postfix instance, for the cluster, SRS and DKIM end-to-end tests.

:class:`BmsHost` starts the daemon, then a Postfix whose ``smtpd_milters``
is that daemon, and stops both; :meth:`BmsHost.smtp` opens an SMTP session
from a given source address (one of the outside or internal test addresses
the ``nsd`` fixture puts on ``lo``).

Also here, for DKIM: :func:`txt_rdata` writes a long TXT record as zone-file
text (character-strings of at most 255 bytes), and :func:`dkim_dnsfunc` is a
``dnsfunc`` for dkimpy that asks one DNS server (an NSD of the test bed)
with dnspython, never the system resolver (TESTBED.md rule one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from .bmsd import BmsDaemon, Sections
from .postfix import Postfix
from .smtp import SmtpClient


@dataclass
class BmsHost:
    """A bms daemon and the Postfix in front of it."""

    name: str
    bms: BmsDaemon
    postfix: Postfix

    @classmethod
    def start(cls, name: str, sections: Sections, access: str = "",
              postfix_options: Mapping[str, Any] | None = None) -> BmsHost:
        """Start bms with ``sections``, then a Postfix (``Postfix(**postfix_options)``)
        pointed at it; on failure nothing is left running."""
        bms = BmsDaemon(sections, access)
        try:
            bms.start()
            pf = Postfix(milters=bms.postfix_spec, **dict(postfix_options or {}))
            try:
                pf.start()
            except BaseException:
                pf.cleanup()
                raise
        except BaseException:
            bms.cleanup()
            raise
        return cls(name, bms, pf)

    def stop(self) -> None:
        try:
            self.postfix.cleanup()
        finally:
            self.bms.cleanup()

    def smtp(self, source: str, timeout: float = 30.0) -> SmtpClient:
        """An SMTP session to this host's Postfix from ``source`` (greeted, no EHLO yet)."""
        return SmtpClient("127.0.0.1", self.postfix.port, source_address=(source, 0),
                          timeout=timeout)

    def log_mark(self) -> int:
        """The number of milter.log lines so far (``wait_log(..., start=mark)``)."""
        return len(self.bms.messages())

    def log_since(self, mark: int) -> list[str]:
        return self.bms.messages()[mark:]


def txt_rdata(value: bytes | str, chunk: int = 200) -> str:
    """Zone-file TXT data for ``value``: quoted character-strings of at most
    ``chunk`` bytes (a DKIM key record is longer than one string may be)."""
    text = value.decode("ascii") if isinstance(value, bytes) else value
    if any(c in text for c in '"\\'):
        raise ValueError("TXT text with quotes or backslashes is not supported here")
    parts = [text[i:i + chunk] for i in range(0, len(text), chunk)] or [""]
    return " ".join(f'"{p}"' for p in parts)


def dkim_dnsfunc(host: str, port: int, timeout: float = 2.0
                 ) -> Callable[..., bytes | None]:
    """A dkimpy ``dnsfunc``: the TXT record of a name (strings joined), asked
    of ``host:port`` only; None when there is none."""
    default_timeout = timeout

    def lookup(name: bytes | str, timeout: float = default_timeout) -> bytes | None:
        qname = name.decode("ascii") if isinstance(name, bytes) else name
        query = dns.message.make_query(qname, dns.rdatatype.TXT)
        response = dns.query.udp(query, host, port=port, timeout=min(timeout, default_timeout))
        if response.rcode() != dns.rcode.NOERROR:
            return None
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                for rdata in rrset:
                    return b"".join(rdata.strings)
        return None

    return lookup


__all__ = ["BmsHost", "dkim_dnsfunc", "txt_rdata"]
