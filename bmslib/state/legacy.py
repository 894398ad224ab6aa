"""One-time import of the original bms's flat files into the state store
(SPEC §6; inventory §3).

Read from ``directory`` (the old logdir), when present:

- ``banned_ips*`` (the file and its rotations ``banned_ips.1``,
  ``banned_ips.2.gz``, ...): one IPv4 or IPv6 address per line;
- ``banned_domains*``: one domain or ``*.suffix`` per line;
  both banned for ``ban_days`` from ``now`` (the files carry no dates);
- ``auto_whitelist.log`` and ``blacklist.log``: ``addr-or-domain
  [YYYYMonDD HH:MM:SS TZ]``.  A timestamp is when the entry was added: it
  expires 60 (whitelist) or 30 (blacklist) days later, and is skipped when
  that is already past.  No timestamp: a manual entry that never expires.

``#`` starts a comment (a whole line, or a word starting with ``#``); blank
lines are ignored.  A malformed line is skipped with a one-line warning
``FILE:LINE: reason: text``, an unreadable file with one warning; neither
raises.  The time zone of a timestamp is UTC/GMT, a US zone (EST, CDT, ...)
or ``+HHMM``; any other name is taken as local time, as the original wrote
and read it.

The import runs once per store: when it has read at least one file (a
start before the files were copied over does not count) it records
``cache[legacy-import, done]`` (never expiring), and every later call
returns at once with ``already_done``, even if the files are still there.
Errors of the store itself propagate (nothing is recorded; the next start
imports again, which is harmless: re-adding keeps the later expiry).
"""

from __future__ import annotations

import gzip
import math
import os
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

from ..log import escape
from ..policy.connection import parse_ip
from .lists import BLACKLIST, WHITELIST

DAY = 86400.0
MARKER_KIND = "legacy-import"
MARKER_KEY = "done"

BANNED_IPS = "banned_ips"
BANNED_DOMAINS = "banned_domains"
# List file -> (list kind, days an entry lives after its timestamp).
LIST_FILES = {"auto_whitelist.log": (WHITELIST, 60.0), "blacklist.log": (BLACKLIST, 30.0)}


class ImportTarget(Protocol):
    """What the import needs of a store (:class:`bmslib.interfaces.StateStore`)."""

    def ban_ip(self, ip: str, until: float, reason: str) -> None: ...

    def ban_domain(self, domain: str, until: float, reason: str) -> None: ...

    def list_add(self, kind: str, entry: str, until: float) -> None: ...

    def cache_get(self, kind: str, key: str, now: float) -> str | None: ...

    def cache_put(self, kind: str, key: str, value: str, until: float) -> None: ...


@dataclass(frozen=True)
class LegacyImport:
    """What :func:`import_legacy` did: distinct entries stored per kind, list
    entries skipped as already expired, the files read, one-line warnings."""

    banned_ips: int = 0
    banned_domains: int = 0
    whitelist: int = 0
    blacklist: int = 0
    expired: int = 0
    files: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    already_done: bool = False

    def summary(self) -> str:
        """One log line."""
        if self.already_done:
            return "legacy files: imported before, not read again"
        return (f"legacy files: {len(self.files)} read, {self.banned_ips} banned IPs, "
                f"{self.banned_domains} banned domains, {self.whitelist} whitelist and "
                f"{self.blacklist} blacklist entries, {self.expired} expired skipped, "
                f"{len(self.warnings)} warnings")


class Malformed(ValueError):
    """A line that cannot be imported; the message says why."""


# --- parsing one line -------------------------------------------------------------------

_LABELS = re.compile(r"[\w-]+(?:\.[\w-]+)*\.?\Z")  # \w: Unicode letters, digits, _
_DATE = re.compile(r"(\d{4})([A-Za-z]{3})(\d{1,2})\Z")
_CLOCK = re.compile(r"(\d{1,2}):(\d{2}):(\d{2})\Z")
_NUMERIC_TZ = re.compile(r"([+-])(\d{2})(\d{2})\Z")
_ZONE_NAME = re.compile(r"[A-Za-z]{1,6}\Z")
_MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}
_ZONE_HOURS = {"UT": 0, "UTC": 0, "GMT": 0, "Z": 0, "EST": -5, "EDT": -4, "CST": -6,
               "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7}


def words(line: str) -> list[str]:
    """The words of ``line`` before a comment (a word starting with ``#``)."""
    out: list[str] = []
    for word in line.split():
        if word.startswith("#"):
            break
        out.append(word)
    return out


def parse_domain(text: str) -> str:
    """A domain name (lowercased, no trailing dot), else :class:`Malformed`."""
    if not _LABELS.match(text):
        raise Malformed("not a domain name")
    return text.rstrip(".").lower()


def parse_ban_ip(fields: list[str]) -> str:
    """The one address of a ``banned_ips`` line, in the form the policy looks up."""
    if len(fields) != 1:
        raise Malformed("expected one IP address")
    ip = parse_ip(fields[0])
    if ip is None:
        raise Malformed("not an IP address")
    return str(ip)


def parse_ban_domain(fields: list[str]) -> str:
    """The domain or ``*.suffix`` of a ``banned_domains`` line."""
    if len(fields) != 1:
        raise Malformed("expected one domain or *.suffix")
    text = fields[0]
    if text.startswith("*."):
        return "*." + parse_domain(text[2:])
    return parse_domain(text)


def parse_entry(text: str) -> str:
    """A list entry: ``user@domain`` or a bare domain (lowercased)."""
    local, at, domain = text.rpartition("@")
    if at and not local:
        raise Malformed("empty local part")
    return f"{local.lower()}@{parse_domain(domain)}" if at else parse_domain(domain)


def parse_zone(zone: str | None) -> timezone | None:
    """A fixed offset for ``zone``; None for local time (absent or unknown name)."""
    if zone is None:
        return None
    numeric = _NUMERIC_TZ.match(zone)
    if numeric:
        sign = -1 if numeric.group(1) == "-" else 1
        minutes = int(numeric.group(2)) * 60 + int(numeric.group(3))
        if minutes >= 24 * 60:
            raise Malformed("bad time zone")
        return timezone(sign * timedelta(minutes=minutes))
    if not _ZONE_NAME.match(zone):
        raise Malformed("bad time zone")
    hours = _ZONE_HOURS.get(zone.upper())
    return None if hours is None else timezone(timedelta(hours=hours))


def parse_timestamp(date: str, clock: str, zone: str | None = None) -> float:
    """``2024Jan05 10:00:01 EST`` as seconds since the epoch."""
    d, c = _DATE.match(date), _CLOCK.match(clock)
    month = _MONTHS.get(d.group(2).lower()) if d else None
    if d is None or c is None or month is None:
        raise Malformed("bad timestamp")
    tz = parse_zone(zone)
    try:
        when = datetime(int(d.group(1)), month, int(d.group(3)),
                        int(c.group(1)), int(c.group(2)), int(c.group(3)), tzinfo=tz)
        return when.timestamp()
    except (ValueError, OverflowError, OSError):
        raise Malformed("bad timestamp") from None


def parse_list_line(fields: list[str]) -> tuple[str, float | None]:
    """``(entry, added)`` of an ``addr-or-domain [YYYYMonDD HH:MM:SS TZ]`` line;
    ``added`` is None for a manual entry (no timestamp)."""
    if len(fields) == 1:
        return parse_entry(fields[0]), None
    if len(fields) in (3, 4):
        zone = fields[3] if len(fields) == 4 else None
        return parse_entry(fields[0]), parse_timestamp(fields[1], fields[2], zone)
    raise Malformed("expected ADDRESS-OR-DOMAIN [YYYYMonDD HH:MM:SS TZ]")


# --- files ------------------------------------------------------------------------------

# A parser turns a line's words into (key, until).
LineParser = Callable[[list[str]], tuple[str, float]]


def file_kind(name: str) -> str | None:
    """``banned_ips``, ``banned_domains``, ``whitelist``, ``blacklist`` or None."""
    for prefix in (BANNED_IPS, BANNED_DOMAINS):
        if name.startswith(prefix):
            return prefix
    listed = LIST_FILES.get(name)
    return None if listed is None else listed[0]


def find_files(directory: str) -> list[tuple[str, str]]:
    """``(kind, path)`` of every legacy file in ``directory``, sorted by name.
    A missing directory has none; an unlistable one raises OSError."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        kind = file_kind(name)
        path = os.path.join(directory, name)
        if kind is not None and os.path.isfile(path):
            found.append((kind, path))
    return found


def read_lines(path: str) -> list[str]:
    """The lines of ``path`` (gunzipped when it ends in ``.gz``); bytes that are
    not UTF-8 kept as surrogate escapes."""
    if path.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            data = f.read()
    else:
        with open(path, "rb") as f:
            data = f.read()
    return [line.rstrip("\r") for line in data.decode("utf-8", "surrogateescape").split("\n")]


def _parsers(now: float, ban_days: float) -> dict[str, LineParser]:
    ban_until = now + ban_days * DAY

    def ban(parse: Callable[[list[str]], str]) -> LineParser:
        return lambda fields: (parse(fields), ban_until)

    def listed(days: float) -> LineParser:
        def parse(fields: list[str]) -> tuple[str, float]:
            entry, added = parse_list_line(fields)
            return entry, math.inf if added is None else added + days * DAY
        return parse

    parsers = {BANNED_IPS: ban(parse_ban_ip), BANNED_DOMAINS: ban(parse_ban_domain)}
    for kind, days in LIST_FILES.values():
        parsers[kind] = listed(days)
    return parsers


def read_file(path: str, parse: LineParser, into: dict[str, float],
              warnings: list[str]) -> bool:
    """Add the entries of ``path`` to ``into`` (keeping the later expiry of a
    key seen twice); warnings for bad lines.  False when it cannot be read."""
    try:
        lines = read_lines(path)
    except (OSError, EOFError, zlib.error) as exc:
        warnings.append(f"{path}: unreadable: {_reason(exc)}")
        return False
    for number, line in enumerate(lines, 1):
        fields = words(line)
        if not fields:
            continue
        try:
            key, until = parse(fields)
        except Malformed as exc:
            warnings.append(f"{path}:{number}: {exc}: {escape(line.strip(), 100)}")
            continue
        into[key] = max(until, into.get(key, until))
    return True


def _reason(exc: Exception) -> str:
    """One line saying why a file could not be read."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return escape(" ".join(text.split()) or type(exc).__name__, 200)


# --- the import -------------------------------------------------------------------------

def _store(store: ImportTarget, kind: str, entries: dict[str, float], now: float) -> int:
    """Write the unexpired ``entries`` of ``kind``; how many."""
    stored = 0
    for key, until in sorted(entries.items()):
        if until <= now:
            continue
        if kind == BANNED_IPS:
            store.ban_ip(key, until, "imported from banned_ips")
        elif kind == BANNED_DOMAINS:
            store.ban_domain(key, until, "imported from banned_domains")
        else:
            store.list_add(kind, key, until)
        stored += 1
    return stored


def import_legacy(store: ImportTarget, directory: str, now: float,
                  ban_days: float) -> LegacyImport:
    """Import the legacy files of ``directory`` into ``store``, once per store."""
    if store.cache_get(MARKER_KIND, MARKER_KEY, now) is not None:
        return LegacyImport(already_done=True)
    warnings: list[str] = []
    try:
        found = find_files(directory)
    except OSError as exc:
        return LegacyImport(warnings=(f"{directory}: unreadable: {_reason(exc)}",))
    if not found:
        return LegacyImport()
    parsers = _parsers(now, ban_days)
    entries: dict[str, dict[str, float]] = {kind: {} for kind in parsers}
    files = tuple(path for kind, path in found
                  if read_file(path, parsers[kind], entries[kind], warnings))
    counts = {kind: _store(store, kind, got, now) for kind, got in entries.items()}
    listed = sum(len(entries[kind]) for kind, _ in LIST_FILES.values())
    result = LegacyImport(
        banned_ips=counts[BANNED_IPS], banned_domains=counts[BANNED_DOMAINS],
        whitelist=counts[WHITELIST], blacklist=counts[BLACKLIST],
        expired=listed - counts[WHITELIST] - counts[BLACKLIST],
        files=files, warnings=tuple(warnings))
    if files:  # nothing readable: try again at the next start
        store.cache_put(MARKER_KIND, MARKER_KEY, f"{result.summary()} from {directory}",
                        math.inf)
    return result
