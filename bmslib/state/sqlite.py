"""The embedded state store: SQLite in WAL mode, safe for several worker
processes (SQLite's file locking) and threads (one connection per thread).

A thread's connection (three fds in WAL mode) goes to the next thread that
needs one once its thread has ended, so a process holds at most one per
thread alive at once (issue 13: a worker held ~190 fds after 10^5 sessions).

It implements :class:`bmslib.interfaces.StateStore`; every table is created
with ``IF NOT EXISTS``, so a file written by an older version gains the new
tables when opened.  An expiry of ``math.inf`` never expires."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from .. import private
from ..interfaces import REPORT_DAYS, SenderStanding
from ..policy.greylist import GreylistKey, GreylistSettings, GreylistVerdict
from . import greylist as _greylist
from .lists import check_kind, entry_key, lookup_keys
from .records import (
    BanEntry,
    GreylistEntry,
    GreylistMatch,
    ListEntry,
    ban_keys,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bans (
    kind TEXT NOT NULL,          -- 'ip' or 'domain'
    key TEXT NOT NULL,           -- the IP text, or a domain / '*.suffix'
    until REAL NOT NULL,         -- expiry, seconds since the epoch
    reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cache (
    kind TEXT NOT NULL,          -- 'cbv', ...
    key TEXT NOT NULL,
    until REAL NOT NULL,         -- expiry, seconds since the epoch
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS lists (
    kind TEXT NOT NULL,          -- 'whitelist' or 'blacklist'
    entry TEXT NOT NULL,         -- lowercased address or bare domain
    until REAL NOT NULL,         -- expiry, seconds since the epoch; inf: manual, never
    PRIMARY KEY (kind, entry)
);
CREATE TABLE IF NOT EXISTS reports (
    day INTEGER NOT NULL,        -- UTC days since the epoch
    key TEXT NOT NULL,           -- the report row (bmslib.policy.dmarcreport)
    count INTEGER NOT NULL,
    PRIMARY KEY (day, key)
);
"""


def _storable(text: str) -> str:
    """``text`` with surrogate-escaped 8-bit bytes as ``\\xNN`` (valid UTF-8)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class SqliteStore:
    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        parent = os.path.dirname(self.path)
        if parent:
            private.make_dir(parent)
        private.create_file(self.path)  # -wal and -shm get its mode from SQLite
        self._local = threading.local()
        # A connection must not cross fork(): each process (and thread) opens
        # its own; one inherited from the parent is set aside, never used or
        # closed (closing it could disturb the parent's locks).
        self._inherited: list[sqlite3.Connection] = []
        # This process's connections by thread, to close those of ended threads.
        self._open: dict[threading.Thread, sqlite3.Connection] = {}
        self._open_lock = threading.Lock()
        self._open_pid = os.getpid()
        db = self._connect()
        try:
            db.executescript(_SCHEMA)
            db.executescript(_greylist.SCHEMA)
        finally:
            db.close()

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False: one thread uses it at a time, but when it
        # ended the next thread that needs a connection takes it (_reuse).
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                             check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None and self._local.pid != os.getpid():
            self._inherited.append(db)
            db = None
        if db is None:
            db = self._reuse() or self._connect_tracked()
            self._local.db = db
            self._local.pid = os.getpid()
        return db

    def _reuse(self) -> sqlite3.Connection | None:
        """The connection of a thread that has ended, now this thread's.
        Reused, not closed: SQLite keeps the fds of a closed connection open
        while another connection of the process holds a lock on the file
        (POSIX locks), so closing would not free them."""
        me = threading.current_thread()
        with self._open_lock:
            if self._open_pid != os.getpid():  # the parent's: never ours to use or close
                self._open, self._open_pid = {}, os.getpid()
            for thread in self._open:
                if not thread.is_alive():
                    db = self._open.pop(thread)
                    self._open[me] = db
                    return db
        return None

    def _connect_tracked(self) -> sqlite3.Connection:
        db = self._connect()
        with self._open_lock:
            self._open[threading.current_thread()] = db
        return db

    def _open_count(self) -> int:
        """Connections this process holds (one per live thread that used it)."""
        with self._open_lock:
            return len(self._open)

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            with self._open_lock:
                self._open.pop(threading.current_thread(), None)
            db.close()
            self._local.db = None

    # --- bans -----------------------------------------------------------------------
    # Text from the wire may carry 8-bit bytes as surrogate escapes, which
    # SQLite cannot store: every key and value goes through _storable().

    def _ban(self, kind: str, key: str, until: float, reason: str) -> None:
        self._db().execute(
            "INSERT INTO bans(kind, key, until, reason) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(kind, key) DO UPDATE SET until = max(until, excluded.until), "
            "reason = excluded.reason", (kind, _storable(key), until, _storable(reason)))

    def ban_ip(self, ip: str, until: float, reason: str) -> None:
        self._ban("ip", ip, until, reason)

    def ip_banned(self, ip: str, now: float) -> bool:
        row = self._db().execute("SELECT 1 FROM bans WHERE kind = 'ip' AND key = ? AND until > ?",
                                 (_storable(ip), now)).fetchone()
        return row is not None

    def ban_domain(self, domain: str, until: float, reason: str) -> None:
        self._ban("domain", domain.lower(), until, reason)

    def domain_banned(self, domain: str, now: float) -> bool:
        """``x.y`` bans exactly x.y; ``*.x.y`` bans every name below x.y."""
        keys = [_storable(k) for k in ban_keys("domain", domain)]
        marks = ",".join("?" * len(keys))
        row = self._db().execute(
            f"SELECT 1 FROM bans WHERE kind = 'domain' AND key IN ({marks}) AND until > ?",
            (*keys, now)).fetchone()
        return row is not None

    def ban_in_force(self, kind: str, name: str, now: float) -> BanEntry | None:
        for key in ban_keys(kind, name):
            row = self._db().execute("SELECT until, reason FROM bans WHERE kind = ? AND key = ? "
                                     "AND until > ?", (kind, _storable(key), now)).fetchone()
            if row is not None:
                return BanEntry(kind, key, float(row[0]), str(row[1]))
        return None

    def purge(self, now: float) -> int:
        """Delete expired bans, cache and list entries; the number removed."""
        db = self._db()
        old = int(now // 86400) - REPORT_DAYS
        return sum(db.execute(f"DELETE FROM {table} WHERE until <= ?", (now,)).rowcount
                   for table in ("bans", "cache", "lists")) + db.execute(
            "DELETE FROM reports WHERE day < ?", (old,)).rowcount

    # --- caches (CBV results, ...) ----------------------------------------------------

    def cache_get(self, kind: str, key: str, now: float) -> str | None:
        row = self._db().execute("SELECT value FROM cache WHERE kind = ? AND key = ? "
                                 "AND until > ?", (kind, _storable(key), now)).fetchone()
        return None if row is None else str(row[0])

    def cache_put(self, kind: str, key: str, value: str, until: float) -> None:
        self._db().execute(
            "INSERT INTO cache(kind, key, until, value) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(kind, key) DO UPDATE SET until = excluded.until, "
            "value = excluded.value", (kind, _storable(key), until, _storable(value)))

    # --- address lists (auto-whitelist, blacklist; bmslib.state.lists) ---------------

    def list_add(self, kind: str, entry: str, until: float) -> None:
        """Add ``entry`` (address or bare domain) to list ``kind`` until ``until``
        (``math.inf``: never expires); an existing entry keeps the later expiry."""
        check_kind(kind)
        key = entry_key(entry)
        if not key:
            return
        self._db().execute(
            "INSERT INTO lists(kind, entry, until) VALUES (?, ?, ?) ON CONFLICT(kind, entry) "
            "DO UPDATE SET until = max(until, excluded.until)", (kind, _storable(key), until))

    def listed(self, kind: str, address: str, now: float) -> bool:
        """``address`` or its domain has an unexpired entry in list ``kind``."""
        check_kind(kind)
        keys = [_storable(k) for k in lookup_keys(address)]
        if not keys:
            return False
        marks = ",".join("?" * len(keys))
        row = self._db().execute(
            f"SELECT 1 FROM lists WHERE kind = ? AND entry IN ({marks}) AND until > ?",
            (kind, *keys, now)).fetchone()
        return row is not None

    def standing(self, domain: str | None, address: str | None, ip: str | None,
                 now: float) -> SenderStanding:
        """One statement for what takes four otherwise: each is a trip
        through SQLite's locks, and a hand-off of the GIL to another thread."""
        parts: list[str] = []
        args: list[object] = []

        def part(sql: str, keys: list[str]) -> None:
            if keys:
                parts.append(sql.format(",".join("?" * len(keys))))
                args.extend([*map(_storable, keys), now])
        part("SELECT 'ban' FROM bans WHERE kind = 'domain' AND key IN ({}) AND until > ?",
             ban_keys("domain", domain) if domain is not None else [])
        part("SELECT kind FROM lists WHERE kind IN ('blacklist', 'whitelist') "
             "AND entry IN ({}) AND until > ?", lookup_keys(address) if address is not None else [])
        part("SELECT 'ip' FROM bans WHERE kind = 'ip' AND key IN ({}) AND until > ?",
             [ip] if ip is not None else [])
        if not parts:
            return SenderStanding()
        found = {str(row[0]) for row in self._db().execute(" UNION ALL ".join(parts), args)}
        return SenderStanding("ban" in found, "blacklist" in found, "whitelist" in found,
                              "ip" in found)

    def list_remove(self, kind: str, entry: str) -> None:
        """Remove ``entry`` from list ``kind`` (nothing when it is not there)."""
        self._db().execute("DELETE FROM lists WHERE kind = ? AND entry = ?",
                           (check_kind(kind), _storable(entry_key(entry))))

    # --- counters ---------------------------------------------------------------------

    def reserve(self, name: str, count: int) -> int:
        """Reserve ``count`` consecutive numbers of counter ``name``; the first.
        Numbers are never handed out twice, across processes and restarts."""
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
            first = int(row[0]) if row else 1
            db.execute("INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) "
                       "DO UPDATE SET value = excluded.value", (name, first + count))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return first

    # --- aggregate-report counters ----------------------------------------------------

    def report_count(self, day: int, key: str, count: int = 1) -> None:
        self._db().execute("INSERT INTO reports(day, key, count) VALUES (?, ?, ?) "
                           "ON CONFLICT(day, key) DO UPDATE SET count = count + excluded.count",
                           (day, _storable(key), count))

    def report_counts(self, first_day: int, last_day: int) -> list[tuple[int, str, int]]:
        rows = self._db().execute("SELECT day, key, count FROM reports WHERE day BETWEEN ? "
                                  "AND ? ORDER BY day, key", (first_day, last_day)).fetchall()
        return [(int(d), str(k), int(c)) for d, k, c in rows]

    # --- greylisting ------------------------------------------------------------------

    def greylist(self, key: GreylistKey, now: float,
                 settings: GreylistSettings) -> GreylistVerdict:
        """One attempt of the triplet ``key``, atomic across threads and processes."""
        return _greylist.greylist(self._db(), key, now, settings)

    def purge_greylist(self, now: float, settings: GreylistSettings) -> int:
        """Delete expired greylist records; the number removed."""
        return _greylist.purge(self._db(), now, settings)

    # --- administration (bmslib.interfaces.StoreAdmin) ---------------------------------

    def bans(self, now: float) -> list[BanEntry]:
        rows = self._db().execute("SELECT kind, key, until, reason FROM bans WHERE until > ? "
                                  "ORDER BY kind, key", (now,)).fetchall()
        return [BanEntry(str(k), str(key), float(u), str(r)) for k, key, u, r in rows]

    def unban(self, kind: str, key: str) -> bool:
        key = key.lower() if kind == "domain" else key
        return self._db().execute("DELETE FROM bans WHERE kind = ? AND key = ?",
                                  (kind, _storable(key))).rowcount > 0

    def list_entries(self, kind: str, now: float) -> list[ListEntry]:
        rows = self._db().execute("SELECT entry, until FROM lists WHERE kind = ? AND until > ? "
                                  "ORDER BY entry", (check_kind(kind), now)).fetchall()
        return [ListEntry(kind, str(entry), float(until)) for entry, until in rows]

    def greylist_entries(self, match: GreylistMatch) -> list[GreylistEntry]:
        return _greylist.entries(self._db(), match)

    def greylist_pass(self, match: GreylistMatch, now: float,
                      settings: GreylistSettings) -> int:
        return _greylist.mark_passed(self._db(), match, now, settings)

    def greylist_forget(self, match: GreylistMatch) -> int:
        return _greylist.forget(self._db(), match)
