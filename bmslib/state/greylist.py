"""The SQLite greylist table: one row per triplet, read-modify-written by
:func:`bmslib.policy.greylist.greylist_step` inside ``BEGIN IMMEDIATE`` so
that threads and forked workers sharing the file never lose an attempt."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from ..policy.greylist import (
    GreylistKey,
    GreylistRecord,
    GreylistSettings,
    GreylistVerdict,
    greylist_step,
)
from .records import GreylistEntry, GreylistMatch

SCHEMA = """
CREATE TABLE IF NOT EXISTS greylist (
    origin TEXT NOT NULL,        -- SPF-pass domain or masked client IP
    sender TEXT NOT NULL,
    recipient TEXT NOT NULL,
    firstseen REAL NOT NULL,     -- seconds since the epoch
    lastseen REAL NOT NULL,
    cnt INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (origin, sender, recipient)
);
CREATE INDEX IF NOT EXISTS greylist_lastseen ON greylist(lastseen);
"""


def _text(part: str) -> str:
    """``part`` storable by sqlite3: undecodable bytes (surrogateescape) as ``\\xNN``."""
    return part.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def greylist(db: sqlite3.Connection, key: GreylistKey, now: float,
             settings: GreylistSettings) -> GreylistVerdict:
    """One attempt of ``key`` on autocommit connection ``db``, atomically."""
    key = (_text(key[0]), _text(key[1]), _text(key[2]))
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute("SELECT firstseen, lastseen, cnt FROM greylist WHERE origin = ? "
                         "AND sender = ? AND recipient = ?", key).fetchone()
        old = None if row is None else GreylistRecord(float(row[0]), float(row[1]), int(row[2]))
        new, verdict = greylist_step(old, now, settings)
        db.execute("INSERT INTO greylist(origin, sender, recipient, firstseen, lastseen, cnt) "
                   "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(origin, sender, recipient) DO UPDATE "
                   "SET firstseen = excluded.firstseen, lastseen = excluded.lastseen, "
                   "cnt = excluded.cnt", (*key, new.firstseen, new.lastseen, new.count))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return verdict


def purge(db: sqlite3.Connection, now: float, settings: GreylistSettings) -> int:
    """Delete records the next attempt would start afresh
    (:func:`bmslib.policy.greylist.expired`); the number removed."""
    return db.execute(
        "DELETE FROM greylist WHERE ? - lastseen > ? OR (cnt = 0 AND ? > firstseen + ?)",
        (now, settings.retain, now, settings.time + settings.expire)).rowcount


def entries(db: sqlite3.Connection, match: GreylistMatch) -> list[GreylistEntry]:
    """The triplets ``match`` selects, sorted."""
    rows = db.execute("SELECT origin, sender, recipient, firstseen, lastseen, cnt FROM greylist "
                      "ORDER BY origin, sender, recipient").fetchall()
    found = (GreylistEntry(str(o), str(s), str(r), float(f), float(la), int(c))
             for o, s, r, f, la, c in rows)
    return [e for e in found if match.matches(e)]


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[None]:
    """A write transaction on autocommit connection ``db``."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def mark_passed(db: sqlite3.Connection, match: GreylistMatch, now: float,
                settings: GreylistSettings) -> int:
    """Let the next attempt of the selected triplets pass: one still waiting
    counts as first seen ``time`` ago (its retry within ``expire`` passes, as
    a retry after waiting would), and every one counts as seen ``now``; how many."""
    with _immediate(db):
        chosen = entries(db, match)
        for e in chosen:
            db.execute("UPDATE greylist SET firstseen = CASE WHEN cnt = 0 THEN ? ELSE "
                       "firstseen END, lastseen = ? WHERE origin = ? AND sender = ? AND "
                       "recipient = ?",
                       (now - settings.time, now, e.origin, e.sender, e.recipient))
    return len(chosen)


def forget(db: sqlite3.Connection, match: GreylistMatch) -> int:
    """Delete the selected triplets; how many."""
    with _immediate(db):
        chosen = entries(db, match)
        for e in chosen:
            db.execute("DELETE FROM greylist WHERE origin = ? AND sender = ? AND recipient = ?",
                       (e.origin, e.sender, e.recipient))
    return len(chosen)
