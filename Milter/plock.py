"""pymilter's ``Milter.plock``: update a file the way ``/etc/passwd`` is
updated.  ``lock()`` creates ``NAME.lock`` exclusively (it fails while
another update holds it) and returns it for writing the new version;
``commit()`` renames it over ``NAME`` (optionally keeping the old one as a
backup hard link); ``unlock()`` abandons the update.
"""

from __future__ import annotations

import os
import time
from typing import TextIO

__all__ = ["PLock"]


class PLock:
    """A lock, update, rename transaction on the file ``basename``."""

    def __init__(self, basename: str) -> None:
        self.basename = basename
        self.lockname = basename + ".lock"
        self.fp: TextIO | None = None

    def lock(self, lockname: str | None = None, mode: int = 0o660,
             strict_perms: bool = False) -> TextIO:
        """Start an update; the returned file receives the new contents.
        ``OSError`` (``FileExistsError``) while someone else holds the lock.
        The new file gets at least the old file's permissions and group."""
        self.unlock()
        self.lockname = lockname or self.basename + ".lock"
        gid = -1
        try:
            st = os.stat(self.basename)
            mode |= st.st_mode & 0o7777
            gid = st.st_gid
        except OSError:
            pass
        old_umask = os.umask(0o002)
        try:
            fd = os.open(self.lockname, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        finally:
            os.umask(old_umask)
        self.fp = os.fdopen(fd, "w")
        if gid != -1:
            try:
                os.chown(self.lockname, -1, gid)
            except OSError:
                if strict_perms:
                    self.unlock()
                    raise
        return self.fp

    def wlock(self, lockname: str | None = None, interval: float = 2.0) -> TextIO:
        """Wait until the lock is free, then start an update."""
        while True:
            try:
                return self.lock(lockname)
            except FileExistsError:
                time.sleep(interval)

    def commit(self, backname: str | None = None) -> None:
        """Make the new version current; keep the old one as ``backname``."""
        if self.fp is None:
            raise OSError("File not locked")
        self.fp.close()
        self.fp = None
        if backname:
            try:
                os.remove(backname)
            except FileNotFoundError:
                pass
            try:
                os.link(self.basename, backname)
            except FileNotFoundError:
                pass
        os.rename(self.lockname, self.basename)

    def unlock(self) -> None:
        """Abandon the update in progress, if any."""
        if self.fp is not None:
            try:
                self.fp.close()
            finally:
                self.fp = None
                os.remove(self.lockname)
