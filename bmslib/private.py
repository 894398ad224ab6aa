"""Files and directories that hold mail data (addresses, subjects, greylist
triplets): created readable by the daemon's user only, whatever the umask.

An existing file or directory keeps the mode the admin gave it; only what
bms creates itself is made private (0600 files, 0700 directories).
"""

from __future__ import annotations

import os

FILE_MODE = 0o600
DIR_MODE = 0o700


def make_dir(path: str) -> None:
    """``path`` and its parents; the last one, when created here, is 0700."""
    os.makedirs(path, mode=DIR_MODE, exist_ok=True)


def create_file(path: str) -> None:
    """Create ``path`` (0600) unless it exists; its content is left alone."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE))
