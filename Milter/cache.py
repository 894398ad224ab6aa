"""pymilter's ``Milter.cache``: ``AddrCache``, a map of e-mail addresses
(or domains) whose entries expire, for automatic white and black lists.

Entries whose value is false (``None``) are persistent: ``cache[addr] =
None`` appends ``addr TIMESTAMP`` to the store file and the entry expires
``renew`` days later; ``addperm(addr)`` appends a bare ``addr`` line, which
never expires.  Other values (e.g. a failed call-back result) live only in
memory.  Looking up ``user@domain`` falls back to an entry for ``domain``.
``load`` reads the store, dropping expired and unparsable lines from it.
"""

from __future__ import annotations

import time
from typing import Any

from .plock import PLock

__all__ = ["AddrCache"]

_DAY = 24 * 60 * 60


class AddrCache:
    """Addresses with an expiry, persisted to a text file."""

    time_format = "%Y%b%d %H:%M:%S %Z"

    def __init__(self, renew: int = 7, fname: str | None = None) -> None:
        self.age = renew
        self.cache: dict[str, tuple[float | None, Any]] = {}
        self.fname = fname

    def load(self, fname: str, age: int = 0) -> None:
        """Replace the contents with the store ``fname``; entries older than
        ``age`` days (default: ``renew``) are dropped from memory and file."""
        if not age:
            age = self.age
        self.fname = fname
        self.cache = {}
        now = time.time()
        too_old = now - age * _DAY
        lock = PLock(fname)
        out = lock.lock()
        changed = False
        try:
            try:
                with open(fname, encoding="utf-8", errors="replace") as fp:
                    lines = fp.readlines()
            except FileNotFoundError:
                lines = []
            for line in lines:
                fields = line.strip().split(None, 1)
                if not fields:
                    changed = True
                    continue
                if len(fields) == 1:
                    self.cache[fields[0].lower()] = (now, None)  # manual entry
                else:
                    try:
                        ts = time.mktime(time.strptime(fields[1], self.time_format))
                    except (ValueError, OverflowError):
                        changed = True  # unparsable timestamp: garbage
                        continue
                    if ts < too_old:
                        changed = True
                        continue
                    self.cache[fields[0].lower()] = (ts, None)
                out.write(line)
        except BaseException:
            lock.unlock()
            raise
        if changed:
            lock.commit(fname + ".old")
        else:
            lock.unlock()

    def _fresh(self, key: str) -> bool:
        entry = self.cache.get(key)
        if entry is None:
            return False
        ts = entry[0]
        if not ts or ts > time.time() - self.age * _DAY:
            return True
        del self.cache[key]
        return False

    def has_precise_key(self, sender: str) -> bool:
        """True if exactly ``sender`` is cached and not expired."""
        return bool(sender) and self._fresh(sender.lower())

    def has_key(self, sender: str) -> bool:
        """True if ``sender`` or its domain is cached and not expired."""
        if self.has_precise_key(sender):
            return True
        _user, at, host = sender.partition("@")
        return bool(at) and self.has_precise_key(host)

    __contains__ = has_key

    def __getitem__(self, sender: str) -> Any:
        key = sender.lower()
        if self._fresh(key):
            return self.cache[key][1]
        _user, at, host = sender.partition("@")
        if at:
            return self[host]
        raise KeyError(sender)

    def addperm(self, sender: str, res: Any = None) -> None:
        """Add ``sender`` permanently (written to the store when ``res`` is false)."""
        key = sender.lower()
        entry = self.cache.get(key)
        if entry is not None and not entry[0]:
            return  # already permanent
        self.cache[key] = (None, res)
        if not res and self.fname:
            with open(self.fname, "a", encoding="utf-8") as fp:
                print(sender, file=fp)

    def __setitem__(self, sender: str, res: Any) -> None:
        now = time.time()
        self.cache[sender.lower()] = (now, res)
        if not res and self.fname:
            stamp = time.strftime(self.time_format, time.localtime(now))
            with open(self.fname, "a", encoding="utf-8") as fp:
                print(sender, stamp, file=fp)

    def __len__(self) -> int:
        return len(self.cache)
