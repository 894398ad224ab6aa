"""The SQLite greylist table: one row per triplet, read-modify-written by
:func:`bmslib.policy.greylist.greylist_step` inside ``BEGIN IMMEDIATE`` so
that threads and forked workers sharing the file never lose an attempt."""

from __future__ import annotations

import sqlite3

from ..policy.greylist import (
    GreylistKey,
    GreylistRecord,
    GreylistSettings,
    GreylistVerdict,
    greylist_step,
)

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
