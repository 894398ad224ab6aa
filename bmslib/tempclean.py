"""Delete old files from ``[milter] tempdir`` (``tempdir_max_age`` days; 0: never).

The tempdir holds the originals of defanged messages: hostile content, kept
for an admin to look at, not forever.  The daemon runs :class:`TempCleaner`
at startup and then from the server's main loop (the parent process only
when there are workers), at most once per ``interval``.

Safety: only regular files are deleted, found by walking the tempdir with
directory file descriptors (``os.fwalk``) and never following a symbolic
link, so a link planted in the tempdir, or a directory swapped for one while
we walk, cannot lead outside it; directories are never deleted.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

DAY = 86400.0
DEFAULT_INTERVAL = 3600.0


def clean_tempdir(path: str, max_age_days: float, now: float | None = None) -> int:
    """Delete regular files under ``path`` whose mtime is older than
    ``max_age_days`` days before ``now``; return how many were deleted."""
    if max_age_days <= 0 or not path:
        return 0
    cutoff = (time.time() if now is None else now) - max_age_days * DAY
    removed = 0
    if not os.path.lexists(path):
        return 0
    for dirpath, _dirnames, filenames, dirfd in os.fwalk(path, follow_symlinks=False):
        for name in filenames:
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                    os.unlink(name, dir_fd=dirfd)
                    removed += 1
            except FileNotFoundError:
                continue  # gone meanwhile
            except OSError as exc:
                log.warning("TEMPDIR: cannot remove %s: %s", os.path.join(dirpath, name),
                            exc.strerror or exc)
    return removed


Settings = Callable[[], tuple[str, float]]  # () -> (tempdir, max_age_days), read per run


class TempCleaner:
    """Runs :func:`clean_tempdir` on the first :meth:`tick` and then at most
    once per ``interval`` seconds; ``settings`` is read at each run, so a
    reloaded configuration applies."""

    def __init__(self, settings: Settings, interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.interval = interval
        self.clock = clock
        self._next: float | None = None

    def tick(self) -> None:
        now = self.clock()
        if self._next is not None and now < self._next:
            return
        self._next = now + self.interval
        self.run()

    def run(self) -> int:
        tempdir, max_age = self.settings()
        if not tempdir or max_age <= 0:
            return 0
        # The configured path is the admin's and may itself be a link; inside
        # it nothing is followed.
        path = os.path.realpath(tempdir)
        try:
            removed = clean_tempdir(path, max_age)
        except OSError as exc:
            log.warning("TEMPDIR: cannot clean %s: %s", path, exc.strerror or exc)
            return 0
        if removed:
            log.info("TEMPDIR: removed %d files older than %g days from %s", removed, max_age,
                     path)
        return removed
