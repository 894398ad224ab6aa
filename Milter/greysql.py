"""pymilter's ``Milter.greysql``: :class:`Milter.greylist.Greylist`'s rules
with the state in an sqlite3 database (table ``greylist``: ip, sender,
recipient, firstseen, lastseen, cnt, umis).
"""

from __future__ import annotations

import csv
import sqlite3
import threading
import time
from typing import TextIO

from .greylist import Record, Times

__all__ = ["Greylist"]

_db_lock = threading.Lock()

_SCHEMA = """create table if not exists greylist(
  ip text, sender text, recipient text,
  firstseen timestamp, lastseen timestamp, cnt integer, umis text,
  primary key (ip, sender, recipient))"""
_COLUMNS = "ip, sender, recipient, firstseen, lastseen, cnt, umis"


class Greylist(Times):
    """Greylisting state in the sqlite3 database ``dbname``."""

    def __init__(self, dbname: str, grey_time: float = 10, grey_expire: float = 4,
                 grey_retain: float = 36) -> None:
        super().__init__(grey_time, grey_expire, grey_retain)
        self.conn = sqlite3.connect(dbname, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        with self.conn:
            self.conn.execute(_SCHEMA)

    def check(self, ip: str, sender: str, recipient: str, timeinc: float = 0) -> int:
        """Messages allowed so far for the triple (0: defer this one)."""
        triple = (ip, sender, recipient)
        with _db_lock, self.conn:
            row = self.conn.execute(
                "select firstseen, lastseen, cnt, umis from greylist"
                " where ip=? and sender=? and recipient=?", triple).fetchone()
            old = None
            if row is not None:
                old = Record()
                old.firstseen, old.lastseen = float(row[0]), float(row[1])
                old.cnt, old.umis = int(row[2]), row[3]
            r = self.advance(old, ":".join(triple), timeinc)
            self.conn.execute(
                f"insert or replace into greylist({_COLUMNS}) values(?,?,?,?,?,?,?)",
                (*triple, r.firstseen, r.lastseen, r.cnt, r.umis))
        return r.cnt

    def clean(self, timeinc: float = 0) -> int:
        """Delete records past the retention limit; returns how many."""
        limit = time.time() + timeinc - self.greylist_retain
        with _db_lock, self.conn:
            return self.conn.execute("delete from greylist where lastseen < ?",
                                     (limit,)).rowcount

    def import_csv(self, fp: TextIO) -> None:
        """Load rows written by :meth:`Milter.greylist.Greylist.export_csv`."""
        rows = [row for row in csv.reader(fp) if row]
        with _db_lock, self.conn:
            self.conn.executemany(
                f"insert or replace into greylist({_COLUMNS}) values(?,?,?,?,?,?,?)",
                [[None if v == "" else v for v in row] for row in rows])

    def close(self) -> None:
        self.conn.close()
