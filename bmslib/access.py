"""The sendmail access file, read as text: :class:`AccessFile` implements
:class:`bmslib.interfaces.Access` (SPEC §5).

File format (what sendmail's ``makemap`` and Postfix's ``postmap`` read):

* one entry per line, ``KEY<whitespace>VALUE``; blank lines and lines whose
  first non-blank character is ``#`` are ignored, and so is the rest of a line
  from a ``#`` that follows whitespace (outside a quoted ``ERROR:"..."``);
* keys are ``Tag:subject`` (``Tag!subject`` when ``access_file_colon`` is off,
  the layout of access maps built with ``tr : !``), or untagged; keys are
  case-insensitive (makemap and postmap fold them to lower case);
* values: ``OK``, ``RELAY`` (= OK), ``CBV``, ``DSN``, ``REJECT``,
  ``TEMPFAIL``, ``WHITELIST``, ``BLACKLIST``, ``BAN``, ``DISCARD``, ``QUARANTINE``
  (DMARC keys), ``SKIP``
  (stop looking: the built-in default applies) in any case, and sendmail's
  ``ERROR:"550 5.7.1 text"``, ``ERROR:5.7.1:550 text``, ``ERROR:550 text``
  (quotes optional);
* a line that cannot be used (no value, an unknown value, a bad ``ERROR:``, a
  key given twice) is logged as ``FILE:LINE: reason`` once per load and
  skipped; the first entry for a key wins, as with makemap.

The file is read as UTF-8 with ``surrogateescape``, like every other text in
bms: 8-bit bytes that are not UTF-8 survive as they are and match subjects
decoded the same way by the protocol layer.

``access_file_nulls`` only concerns the Berkeley DB layout (keys ending in
NUL, ``postmap -N``); the text file has no NULs, so it changes nothing except
that trailing NULs on a key or value are dropped.  A ``.db`` path is read from
the text file beside it (``/etc/mail/access.db`` -> ``/etc/mail/access``): no
Berkeley DB module and no ``makemap`` run are needed.

Lookup (:meth:`AccessFile.lookup`), first hit wins:

* address ``user@a.b.example.com``: ``T:user@a.b.example.com``, ``T:user@``,
  then the domain and its parents, then ``T:``;
* domain or host name ``a.b.example.com``: ``T:a.b.example.com``,
  ``T:b.example.com``, ``T:.b.example.com``, ``T:example.com``,
  ``T:.example.com``, ``T:com``, ``T:.com``; a domain key covers its
  subdomains, as in sendmail; a leading-dot key (the original bms's form)
  covers subdomains only;
* IPv4 ``192.168.1.2``: ``T:192.168.1.2``, ``T:192.168.1``, ``T:192.168``,
  ``T:192``; IPv6: ``T:IPv6:2001:db8::1``, then shorter prefixes cut at a
  colon (``T:IPv6:2001:db8``, ``T:IPv6:2001``); IPv6 keys in the file are
  normalised (``2001:0DB8:0:0::1`` = ``2001:db8::1``);
* anything else (an SMTP AUTH user name): ``T:name``;
* the null sender ``<>``: ``T:<>``;
* after all of these: ``T:`` (the default for the tag), then a bare ``T``
  key (the original's last resort).

For the sendmail tags ``Connect``, ``From`` and ``To``, each ``T:x`` is
followed by the untagged key ``x``, as sendmail does.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .policy.decision import AccessKind, AccessValue

log = logging.getLogger("bms")


class AccessError(Exception):
    """The access file cannot be used at all (one line, naming the file)."""


_KEYWORDS: dict[str, AccessKind | None] = {
    "ok": AccessKind.OK,
    "relay": AccessKind.OK,
    "cbv": AccessKind.CBV,
    "dsn": AccessKind.DSN,
    "reject": AccessKind.REJECT,
    "tempfail": AccessKind.TEMPFAIL,
    "whitelist": AccessKind.WHITELIST,
    "blacklist": AccessKind.BLACKLIST,
    "ban": AccessKind.BAN,
    "discard": AccessKind.DISCARD,
    "quarantine": AccessKind.QUARANTINE,
    "skip": None,  # sendmail's SKIP: no entry here, and do not look further
}

_UNTAGGED_TOO = frozenset({"connect", "from", "to"})

_XCODE = r"[245]\.\d{1,3}\.\d{1,3}"
_ERROR_XCODE_FIRST = re.compile(rf"(?P<x>{_XCODE}):(?P<c>[45]\d\d)(?:[ \t]+(?P<t>.*))?\Z")
_ERROR_CODE_FIRST = re.compile(
    rf"(?P<c>[45]\d\d)(?:[ \t]+(?P<x>{_XCODE})(?=[ \t]|\Z))?(?:[ \t]+(?P<t>.*))?\Z")


class _Malformed(ValueError):
    pass


@dataclass(frozen=True)
class _Entry:
    value: AccessValue | None  # None: SKIP
    line: int


def _strip_comment(text: str) -> str:
    """``text`` up to a ``#`` that follows whitespace outside double quotes."""
    quoted = False
    for i, c in enumerate(text):
        if c == '"':
            quoted = not quoted
        elif c == "#" and not quoted and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text.rstrip()


def parse_value(text: str) -> AccessValue | None:
    """The right-hand side of an access entry; ``None`` for ``SKIP``.
    Raises ValueError with the reason for anything else."""
    text = _strip_comment(text.strip())
    if not text:
        raise _Malformed("no value")
    if text[:6].lower() == "error:":
        return _parse_error(text[6:].strip())
    parts = text.split(None, 1)
    word, rest = parts[0], (parts[1] if len(parts) > 1 else "")
    kw = word.lower()
    if kw not in _KEYWORDS:
        raise _Malformed(f"unknown value {word!r} (expected OK, CBV, DSN, REJECT, TEMPFAIL, "
                         "WHITELIST, BLACKLIST, BAN, DISCARD, QUARANTINE, RELAY, SKIP "
                         "or ERROR:...)")
    if rest:
        raise _Malformed(f"unexpected text after {word}: {rest!r}")
    kind = _KEYWORDS[kw]
    return None if kind is None else AccessValue(kind)


def _parse_error(text: str) -> AccessValue:
    if text.startswith('"'):
        end = text.find('"', 1)
        if end < 0:
            raise _Malformed(f"ERROR: missing closing quote in {text!r}")
        if text[end + 1:].strip():
            raise _Malformed(f"ERROR: unexpected text after the quotes: {text[end + 1:]!r}")
        text = text[1:end].strip()
    m = _ERROR_XCODE_FIRST.match(text) or _ERROR_CODE_FIRST.match(text)
    if m is None:
        raise _Malformed(f"ERROR: expected \"550 5.7.1 text\", 5.7.1:550 text or 550 text, "
                         f"got {text!r}")
    code, xcode, reply = m.group("c"), m.group("x") or "", (m.group("t") or "").strip()
    if xcode and xcode[0] != code[0]:
        raise _Malformed(f"ERROR: reply code {code} and enhanced code {xcode} disagree")
    if any(ord(c) < 32 or ord(c) == 127 for c in reply):
        raise _Malformed("ERROR: control characters in the reply text")
    return AccessValue(AccessKind.ERROR, code, xcode, reply)


def _normalise_ipv6(text: str) -> str:
    """An IPv6 address or prefix the way lookups spell it: the compressed
    form of a full address; a prefix lower-cased without leading zeros."""
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        groups = text.lower().split(":")
        return ":".join(g.lstrip("0") or ("0" if g else "") for g in groups)


def _normalise_key(key: str, sep: str) -> str:
    key = key.lower()
    tag, found, subject = key.partition(sep)
    if not found or (sep == ":" and tag == "ipv6"):  # untagged (IPv6:... has colons)
        tag, found, subject = "", "", key
    if subject.startswith("ipv6:"):
        subject = "ipv6:" + _normalise_ipv6(subject[5:])
    elif subject.startswith("[") and subject.endswith("]"):
        subject = subject[1:-1]
    return f"{tag}{sep}{subject}" if found else subject


def _ip_candidates(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[str]:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        octets = str(ip).split(".")
        return [".".join(octets[:n]) for n in range(4, 0, -1)]
    text = ip.compressed
    out = [f"ipv6:{text}"]
    while ":" in text:
        text = text.rsplit(":", 1)[0].rstrip(":")
        if text:
            out.append(f"ipv6:{text}")
    return out


def _domain_candidates(domain: str) -> list[str]:
    labels = domain.split(".")
    out: list[str] = []
    for i in range(len(labels)):
        if not labels[i]:
            continue
        parent = ".".join(labels[i:])
        out.append(parent)
        if i > 0:
            out.append("." + parent)
    return out


def _as_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    t = text
    if t.startswith("[") and t.endswith("]"):
        t = t[1:-1]
    if t.startswith("ipv6:"):
        t = t[5:]
    # Only digits and dots (IPv4) or a colon (IPv6) can parse: skip the two
    # exceptions ip_address() raises for every mail address and domain.
    if ":" not in t and not t.replace(".", "").isdigit():
        return None
    try:
        return ipaddress.ip_address(t)
    except ValueError:
        return None


def subject_candidates(subject: str) -> list[str]:
    """The subjects tried for ``subject``, most specific first (without the
    tag, without the final default)."""
    s = subject.strip().lower()
    if s.startswith("<") and s.endswith(">"):
        s = s[1:-1].strip()
        if not s:
            return ["<>"]
    if not s:
        return []
    ip = _as_ip(s)
    if ip is not None:
        return _ip_candidates(ip)
    user, at, domain = s.rpartition("@")
    if at:
        domain = domain.rstrip(".")
        out = [f"{user}@{domain}"] if domain else []
        if user:
            out.append(f"{user}@")
        if domain:
            dip = _as_ip(domain)
            out += _ip_candidates(dip) if dip is not None else _domain_candidates(domain)
        return out
    return _domain_candidates(s.rstrip(".")) or [s]


@dataclass(frozen=True)
class _Stamp:
    dev: int
    ino: int
    size: int
    mtime_ns: int


def _stamp(st: os.stat_result) -> _Stamp:
    return _Stamp(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def text_path(path: str) -> str:
    """The text file to read for ``path``: ``X.db`` means ``X`` when ``X``
    exists (or when ``X.db`` does not either, for the error message)."""
    if path.endswith(".db"):
        base = path[:-3]
        if os.path.exists(base) or not os.path.exists(path):
            return base
        raise AccessError(f"{path}: a Berkeley DB file; bms reads the text file, and "
                          f"{base} does not exist")
    return path


class AccessFile:
    """A sendmail access file, re-read when it changes.  Thread-safe: a
    lookup reads the current table (a dict swapped whole on reload)."""

    def __init__(self, path: str, colon: bool = True, nulls: bool = False, *,
                 reload_check_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.requested_path = path
        self.path = text_path(path)
        self.sep = ":" if colon else "!"
        self.nulls = nulls
        self.reload_check_interval = reload_check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._stat_failed = False
        self.problems: list[str] = []  # "FILE:LINE: reason" of the last read
        try:
            st = os.stat(self.path)
            table = self._read()
        except OSError as exc:
            raise AccessError(f"{self.path}: cannot read: {exc.strerror or exc}") from None
        self._table: dict[str, _Entry] = table
        self._stamp = _stamp(st)
        self._next_check = clock() + reload_check_interval
        if self.path != path:
            log.info("access file %s: reading the text file %s", path, self.path)

    def __len__(self) -> int:
        return len(self._table)

    # -- loading --------------------------------------------------------------

    def _read(self) -> dict[str, _Entry]:
        with open(self.path, "rb") as f:
            data = f.read()
        text = data.decode("utf-8", "surrogateescape")
        table: dict[str, _Entry] = {}
        problems: list[str] = []
        for lineno, line in enumerate(text.split("\n"), 1):
            line = line.rstrip("\r")
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            problem = self._parse_line(stripped, lineno, table)
            if problem:
                log.warning("%s:%d: %s; line skipped", self.path, lineno, problem)
                problems.append(f"{self.path}:{lineno}: {problem}")
        self.problems = problems
        return table

    def tags(self) -> list[tuple[str, int]]:
        """``(tag, line)`` of every tagged entry (tags in lower case)."""
        return [(key.partition(self.sep)[0], entry.line) for key, entry in self._table.items()
                if self.sep in key and not key.startswith("ipv6:")]

    def _parse_line(self, line: str, lineno: int, table: dict[str, _Entry]) -> str:
        parts = line.split(None, 1)
        key = parts[0]
        rest = parts[1] if len(parts) > 1 else ""
        if self.nulls:
            key = key.rstrip("\0")
            rest = rest.rstrip("\0")
        if "\0" in key or "\0" in rest:
            return "NUL byte in the line"
        try:
            value = parse_value(rest)
        except ValueError as exc:
            return f"{key!a}: {exc}"
        norm = _normalise_key(key, self.sep)
        first = table.get(norm)
        if first is not None:
            return f"{key!a}: given again (first at line {first.line})"
        table[norm] = _Entry(value, lineno)
        return ""

    def reload(self) -> bool:
        """Re-read the file now (SIGHUP).  On failure the old table stays and
        the problem is logged; returns whether the file was read."""
        with self._lock:
            return self._reload_locked()

    def _reload_locked(self) -> bool:
        try:
            st = os.stat(self.path)
            table = self._read()
        except OSError as exc:
            log.error("access file %s: cannot read: %s; keeping the previous entries",
                      self.path, exc.strerror or exc)
            return False
        self._table = table
        self._stamp = _stamp(st)
        self._stat_failed = False
        log.info("access file %s: %d entries", self.path, len(table))
        return True

    def _maybe_reload(self) -> None:
        now = self._clock()
        if now < self._next_check or not self._lock.acquire(blocking=False):
            return
        try:
            if now < self._next_check:
                return
            self._next_check = now + self.reload_check_interval
            try:
                stamp = _stamp(os.stat(self.path))
            except OSError as exc:
                if not self._stat_failed:  # once, not at every check
                    self._stat_failed = True
                    log.error("access file %s: %s; keeping the previous entries",
                              self.path, exc.strerror or exc)
                return
            if stamp != self._stamp or self._stat_failed:
                self._reload_locked()
        finally:
            self._lock.release()

    # -- lookups --------------------------------------------------------------

    def lookup(self, tag: str, subject: str) -> AccessValue | None:
        """The value for ``tag`` and ``subject`` (see the module docstring),
        or None when no entry applies."""
        hit = self.explain(tag, subject)
        return hit.value if hit is not None else None

    def explain(self, tag: str, subject: str) -> AccessHit | None:
        """The entry :meth:`lookup` uses for ``tag`` and ``subject``, or None."""
        self._maybe_reload()
        table = self._table
        t = tag.lower()
        prefix = t + self.sep
        untagged = t in _UNTAGGED_TOO
        keys = [prefix + cand for cand in subject_candidates(subject)]
        if untagged:
            keys = [k for key in keys for k in (key, key[len(prefix):])]
        for key in (*keys, prefix, t):
            entry = table.get(key)
            if entry is not None:
                return AccessHit(key, entry.value, self.path, entry.line)
        return None


@dataclass(frozen=True)
class AccessHit:
    """Which access-file line gave a lookup its value: the key as normalised
    (lowercased), the value (None: ``SKIP``), the file and line number."""

    key: str
    value: AccessValue | None
    path: str
    line: int
