"""pymilter's ``Milter.greylist``: greylisting of (IP, sender, recipient)
triples, stored in a ``shelve`` file.  ``Milter.greysql`` is the same on
sqlite3.

``check(ip, sender, recipient)`` returns how many messages the triple has
been allowed so far: 0 means "defer it" (first seen, still inside
``grey_time`` minutes, or the first retry came after ``grey_expire``
hours, which starts over).  A triple unseen for ``grey_retain`` days starts
over too.  ``timeinc`` shifts "now" by that many seconds (for tests).
"""

from __future__ import annotations

import csv
import logging
import shelve
import threading
import time
import urllib.parse
from typing import TextIO

__all__ = ["Greylist", "Record", "quoteAddress"]

log = logging.getLogger("milter.greylist")

#: Seconds a retry must come later than ``grey_time`` (pymilter's slack).
_SLACK = 5


def quoteAddress(s: str) -> str:
    """``s`` (a domain or local part) quoted to be safe in a file name or key.

    >>> quoteAddress('.joe/x:y@example.com')
    '%2ejoe%2Fx%3Ay@example.com'
    """
    quoted = urllib.parse.quote(s, "@_-+~!.%")
    return "%2e" + quoted[1:] if quoted.startswith(".") else quoted


class Record:
    """What is known about one triple."""

    __slots__ = ("cnt", "firstseen", "lastseen", "umis")

    def __init__(self, timeinc: float = 0) -> None:
        now = time.time() + timeinc
        self.firstseen = now
        self.lastseen = now
        self.cnt = 0
        self.umis: str | None = None

    def __str__(self) -> str:
        return (f"Grey[{time.ctime(self.firstseen)}:{time.ctime(self.lastseen)}:"
                f"{self.umis}:{self.cnt}]")


class Times:
    """The three greylisting periods, in seconds."""

    def __init__(self, grey_time: float, grey_expire: float, grey_retain: float) -> None:
        self.greylist_time = grey_time * 60  # minutes
        self.greylist_expire = grey_expire * 3600  # hours
        self.greylist_retain = grey_retain * 24 * 3600  # days
        self.ignoreLastByte = False

    def advance(self, r: Record | None, key: str, timeinc: float) -> Record:
        """The record after one more attempt of the triple ``key``."""
        now = time.time() + timeinc
        if r is None:
            return Record(timeinc)
        if now > r.lastseen + self.greylist_retain:
            log.debug("Expired greylist: %s", key)
            return Record(timeinc)
        if now < r.firstseen + self.greylist_time + _SLACK:
            log.debug("Early greylist: %s", key)
            r.lastseen = now
            return r
        if r.cnt or now < r.firstseen + self.greylist_expire:
            r.lastseen = now
            r.cnt += 1
            log.debug("Active greylist(%d): %s", r.cnt, key)
            return r
        log.debug("Late greylist: %s", key)
        return Record(timeinc)


class Greylist(Times):
    """Greylisting state in the shelve file ``dbname``."""

    def __init__(self, dbname: str, grey_time: float = 10, grey_expire: float = 4,
                 grey_retain: float = 36) -> None:
        super().__init__(grey_time, grey_expire, grey_retain)
        self.dbp: shelve.Shelf[Record] = shelve.open(dbname, "c", protocol=2)  # noqa: SIM115
        self.lock = threading.Lock()

    def check(self, ip: str, sender: str, recipient: str, timeinc: float = 0) -> int:
        """Messages allowed so far for the triple (0: defer this one)."""
        key = f"{ip}:{quoteAddress(sender)}:{quoteAddress(recipient)}"
        with self.lock:
            try:
                old: Record | None = self.dbp[key]
            except (KeyError, ValueError, EOFError, AttributeError, ImportError):
                old = None  # absent, or an unreadable record: start over
            r = self.advance(old, key, timeinc)
            self.dbp[key] = r
            self.dbp.sync()
        return r.cnt

    def clean(self, timeinc: float = 0) -> int:
        """Delete records past the retention limit; returns how many."""
        cnt = 0
        with self.lock:
            now = time.time() + timeinc
            for key in list(self.dbp.keys()):
                if now > self.dbp[key].lastseen + self.greylist_retain:
                    del self.dbp[key]
                    cnt += 1
            self.dbp.sync()
        return cnt

    def export_csv(self, fp: TextIO, timeinc: float = 0) -> None:
        """Write the live records as CSV rows (greysql's ``import_csv`` format)."""
        w = csv.writer(fp)
        now = time.time() + timeinc
        for key in self.dbp:
            r = self.dbp[key]
            if now > r.lastseen + self.greylist_retain:
                continue
            ip, sender, recipient = key.rsplit(":", 2)
            w.writerow([ip, sender, recipient, r.firstseen, r.lastseen, r.cnt, r.umis])

    def close(self) -> None:
        self.dbp.close()
