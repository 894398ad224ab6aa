"""DMARC evaluation (RFC 7489 §6.6, with the settled DMARCbis changes) of
outside mail at end of message, after SPF and DKIM.

:class:`DmarcCheck` looks up the policy of the From: domain (``_dmarc.<domain>``,
then ``_dmarc.<organizational domain>``), checks identifier alignment of the
SPF-authenticated domain (MAIL FROM, or HELO for the null sender) and of
every passing DKIM signature, and picks the policy that applies: ``p`` for
the domain that published it, ``sp`` for its subdomains, ``np`` for a
subdomain that does not exist (no A, AAAA or MX).  ``pct`` samples failing
messages with the injected random source; a message left out of the sample,
or one under ``t=y``, gets the next weaker policy (reject -> quarantine ->
none, RFC 7489 §6.6.4).  The organizational domain comes from the Public
Suffix List shipped in the ``publicsuffixlist`` wheel (never fetched at run
time).

The PyPI ``dmarc`` package was looked at and not used: it signals policies
with exceptions, parses strictly (raising on lenient records), does its own
DNS instead of going through :class:`~bmslib.interfaces.Resolver`, and uses
the unmaintained ``publicsuffix2`` list.

Evaluation never raises: DNS that cannot be answered gives ``temperror``,
unusable From: fields give ``permerror``; both leave the mail alone.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from publicsuffixlist import PublicSuffixList

from ..interfaces import DnsTempError, Resolver
from .dkim import DkimResult
from .dmarcrecord import DmarcRecord, select_record
from .headertext import pvalue

WEAKER = {"reject": "quarantine", "quarantine": "none", "none": "none"}

_PSL: PublicSuffixList | None = None
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")


def org_domain(domain: str) -> str:
    """The organizational domain of ``domain`` (the domain itself when it is
    a public suffix or not under any known one)."""
    d = domain.lower().rstrip(".")
    # A name longer than DNS allows is never cached: hostile input cannot
    # grow the cache's entries beyond 253 characters each.
    return _org_domain(d) if len(d) <= 253 else _lookup(d)


def _lookup(d: str) -> str:
    global _PSL
    if _PSL is None:
        _PSL = PublicSuffixList()
    found = _PSL.privatesuffix(d)
    return str(found) if found else d


# The Public Suffix List lookup costs ~20 us a name (IDNA and label walks in
# publicsuffixlist); a message asks for the same few names up to 6 times
# (alignment of SPF and every DKIM signature, the record search).
_org_domain = lru_cache(maxsize=4096)(_lookup)


def domain_name(text: str) -> str | None:
    """``text`` as a lowercase ASCII domain name (IDNs as A-labels), or None
    when it cannot be one (then nothing is looked up)."""
    d = text.strip().lower().rstrip(".")
    if not d.isascii():
        try:
            d = d.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = d.split(".")
    if len(d) > 253 or len(labels) < 2 or not all(_LABEL.match(x) for x in labels):
        return None
    return d


def aligned(identifier: str, author: str, mode: str) -> bool:
    """Identifier alignment: strict needs the same name, relaxed the same
    organizational domain."""
    a, b = identifier.lower().rstrip("."), author.lower().rstrip(".")
    if not a or not b:
        return False
    return a == b if mode == "s" else org_domain(a) == org_domain(b)


@dataclass(frozen=True)
class DmarcOutcome:
    """``result`` is an RFC 8601 dmarc result: pass, fail, none, temperror or
    permerror.  ``policy`` is the published policy that applies (p, sp or np;
    "" without a record), ``disposition`` what is left of it after pct and t=y
    for a failing message ("none" otherwise)."""

    result: str
    domain: str = ""  # header.from
    policy: str = ""
    disposition: str = "none"
    spf: str = "none"  # pass (aligned), unaligned, or the SPF result
    dkim: str = "none"  # pass (aligned), unaligned, or the best DKIM result
    record: DmarcRecord | None = None
    reason: str = ""
    policy_domain: str = ""  # where the record was found
    sampled_out: bool = False  # pct or t=y made the disposition weaker

    def authres(self) -> str:
        """The ``dmarc=`` item of Authentication-Results."""
        r = self.record
        comment = (f" (p={r.p} sp={r.sp} pct={r.pct} dis={self.disposition.upper()})"
                   if r is not None else "")
        if self.reason and self.result in ("permerror", "temperror"):
            comment = f" ({self.reason})"
        from_ = f" header.from={pvalue(self.domain)}" if self.domain else ""
        return f"dmarc={self.result}{comment}{from_}"


class DmarcCheck:
    """DMARC for one message: ``check(from_domains, spf_result, spf_domain,
    dkim_results)``."""

    def __init__(self, resolver: Resolver, rand: Callable[[], float] = random.random) -> None:
        self.resolver = resolver
        self.rand = rand

    def __call__(self, from_domains: Sequence[str], spf_result: str, spf_domain: str,
                 dkim_results: Sequence[DkimResult]) -> DmarcOutcome:
        domains = {d.lower().rstrip(".") for d in from_domains}
        if not domains - {""}:
            return DmarcOutcome("permerror", reason="no From: domain")
        if len(domains) > 1:
            return DmarcOutcome("permerror", reason="several From: domains")
        domain = domain_name(domains.pop())
        if domain is None:
            return DmarcOutcome("permerror", reason="invalid From: domain")
        try:
            found = self._record(domain)
        except DnsTempError:
            return DmarcOutcome("temperror", domain, reason="DNS timeout")
        record, where, problem = found
        spf = self._spf(record or DmarcRecord(), domain, spf_result, spf_domain)
        dkim = self._dkim(record or DmarcRecord(), domain, dkim_results)
        if record is None:
            return DmarcOutcome("permerror" if problem else "none", domain, spf=spf,
                                dkim=dkim, reason=problem)
        try:
            policy = self._policy(record, domain, where)
        except DnsTempError:
            return DmarcOutcome("temperror", domain, reason="DNS timeout")
        if spf == "pass" or dkim == "pass":
            return DmarcOutcome("pass", domain, policy, "none", spf, dkim, record,
                                policy_domain=where)
        disposition = policy
        if record.testing or (record.pct < 100 and self.rand() * 100 >= record.pct):
            disposition = WEAKER[policy]
        return DmarcOutcome("fail", domain, policy, disposition, spf, dkim, record,
                            policy_domain=where, sampled_out=disposition != policy)

    def _record(self, domain: str) -> tuple[DmarcRecord | None, str, str]:
        """(record, the domain it was published at, problem)."""
        record, problem = select_record(self.resolver.txt(f"_dmarc.{domain}"))
        if record is not None or problem:
            return record, domain, problem
        org = org_domain(domain)
        if org == domain:
            return None, domain, ""
        record, problem = select_record(self.resolver.txt(f"_dmarc.{org}"))
        return record, org, problem

    def _policy(self, record: DmarcRecord, domain: str, where: str) -> str:
        if where == domain:
            return record.p
        if record.np != record.sp and not self._exists(domain):
            return record.np
        return record.sp

    def _exists(self, domain: str) -> bool:
        return bool(self.resolver.addresses(domain) or self.resolver.mx(domain))

    @staticmethod
    def _spf(record: DmarcRecord, domain: str, result: str, spf_domain: str) -> str:
        if result != "pass":
            return result or "none"
        return "pass" if aligned(spf_domain, domain, record.aspf) else "unaligned"

    @staticmethod
    def _dkim(record: DmarcRecord, domain: str, results: Sequence[DkimResult]) -> str:
        passed = [r for r in results if r.result == "pass"]
        if any(aligned(r.domain, domain, record.adkim) for r in passed):
            return "pass"
        if passed:
            return "unaligned"
        return results[0].result if results else "none"
