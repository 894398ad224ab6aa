"""The daemon's pidfile (``bms --pidfile PATH``), as init scripts expect it.

Contract:

* :meth:`Pidfile.claim` runs at startup, before the socket is bound and
  while still root: it opens (creates) the file and takes an exclusive
  ``flock`` on it, held for the daemon's life.  If another process holds the
  lock, bms is running: :class:`PidfileError`, one line naming its pid.  A
  file left by a dead daemon is not locked, so it is simply taken over; a
  reused pid cannot fool this.
* :meth:`Pidfile.write` puts our pid in the file once the daemon is ready
  (socket listening, policy built, signals handled): "the pidfile holds a
  pid" means "the MTA can connect".  It writes through the descriptor opened
  at claim time, so it works after the switch to an unprivileged user, in a
  directory that user may not write to.  Until then the file is empty.
* :meth:`Pidfile.release` runs at a clean exit: it removes the file, or
  empties it when the directory is not ours to remove files from.
"""

from __future__ import annotations

import fcntl
import os


class PidfileError(Exception):
    """Another instance runs, or the pidfile cannot be used; ``str()`` is one line."""


def read_pid(path: str) -> int | None:
    """The pid in ``path``; None when the file is missing, empty or not a pid."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(64).strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and 0 < int(text) < 1 << 22 else None


class Pidfile:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def _error(self, what: str, exc: OSError) -> PidfileError:
        return PidfileError(f"pidfile {self.path}: {what}: {exc.strerror or exc}")

    def claim(self) -> None:
        """Open and lock the file; refuse when a running bms holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644)
        except OSError as exc:
            raise self._error("cannot open", exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = read_pid(self.path)
            who = f"pid {pid}" if pid is not None else "a process that is still starting"
            raise PidfileError(f"already running as {who} (pidfile {self.path})") from None
        except OSError as exc:
            os.close(fd)
            raise self._error("cannot lock", exc) from None
        os.ftruncate(fd, 0)  # a dead daemon's pid is no longer true
        self._fd = fd

    def write(self, pid: int | None = None) -> None:
        """Write ``pid`` (default: ours) into the claimed file."""
        if self._fd is None:
            raise PidfileError(f"pidfile {self.path}: not claimed")
        data = f"{os.getpid() if pid is None else pid}\n".encode("ascii")
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError as exc:
            raise self._error("cannot write", exc) from None

    def release(self) -> None:
        """Remove the file if it is still the one we locked (else leave it),
        or empty it when we may not remove it; then unlock.  Never raises."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        removed = False
        try:
            mine = os.fstat(fd)
            st = os.stat(self.path, follow_symlinks=False)
            if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                os.unlink(self.path)
                removed = True
        except OSError:
            pass
        try:
            if not removed:  # our own file in any case: no stale pid stays behind
                os.ftruncate(fd, 0)
        except OSError:
            pass
        finally:
            os.close(fd)
