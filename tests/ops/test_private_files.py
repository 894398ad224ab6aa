"""Files holding mail data are private whatever the umask: a daemon started
at umask 022 creates milter.log, bms.sqlite (and its -wal, -shm) 0600 and
datadir, logdir and tempdir 0700."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .helpers import Daemon, write_config


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_files_at_umask_022(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"greylist": {"enabled": "yes"}})
    old = os.umask(0o022)
    try:
        d = Daemon(tmp_path, cfg).wait_ready()
    finally:
        os.umask(old)
    try:
        d.wait_log("bms starting on")
        lib = tmp_path / "lib"
        found = {p.name: oct(mode(p)) for p in (d.log, lib / "bms.sqlite",
                                                lib / "bms.sqlite-wal", lib / "bms.sqlite-shm")}
        assert found == dict.fromkeys(("milter.log", "bms.sqlite", "bms.sqlite-wal",
                                       "bms.sqlite-shm"), "0o600")
        dirs = {p.name: oct(mode(p)) for p in (lib, tmp_path / "log", tmp_path / "save")}
        assert dirs == dict.fromkeys(("lib", "log", "save"), "0o700")
        assert oct(mode(tmp_path / "stderr.log")) == "0o644"  # the umask did apply (control)
        # The socket got 0755 from that umask: Postfix could not connect, and bms says so.
        sock = tmp_path / "run" / "bms.sock"
        assert f"unix socket {sock} is mode 0755 owner root: only root (sendmail) " \
               "can connect; for Postfix set [milter] socket_group = postfix and " \
               "socket_mode = 0660" in d.messages()
    finally:
        assert d.stop() == 0
