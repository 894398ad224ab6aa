"""The systemd unit's way to serve Postfix over a unix socket: bms runs as
User=mail (never root) with SupplementaryGroups=postfix and
``socket_group = postfix``, ``socket_mode = 0660``; user postfix can connect.
Without the group, --check-config and the start both refuse in one line."""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bmslib import exitcodes

from .helpers import Daemon, Installed, bms_command, write_config

CONNECT = """
import socket, struct, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(struct.pack("!IcIII", 13, b"O", 6, 0x1ff, 0x1fffff))
print(s.recv(1)[:1].hex())
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="runs processes as mail and postfix")
def test_postfix_unix_socket_under_the_units_user(installed: Installed,
                                                  open_tmp: Path) -> None:
    if installed.drop_user is None:
        pytest.skip("no interpreter here that user mail can run")
    try:
        postfix_gid = grp.getgrnam("postfix").gr_gid
    except KeyError:
        pytest.skip("no postfix group (./test.sh installs postfix)")
    cfg = write_config(open_tmp, {"milter": {"socket_group": "postfix",
                                             "socket_mode": "0660"}})
    for sub in ("run", "log", "lib", "save"):
        (open_tmp / sub).mkdir()
        shutil.chown(open_tmp / sub, "mail")
    check = subprocess.run(bms_command("-c", str(cfg), "--check-config",
                                       python=str(installed.python)),
                           user="mail", group="mail", extra_groups=[], cwd="/",
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == exitcodes.NOPERM, check
    assert check.stderr.splitlines()[-1] == (
        f"bms: {cfg}: [milter] socket_group: user mail is not in group postfix and bms is "
        "not started as root; add the group (systemd: SupplementaryGroups=) or start bms "
        "as root")
    d = Daemon(open_tmp, cfg, user="mail", python=str(installed.python), cwd=Path("/"),
               groups=["postfix"])
    try:
        d.wait_ready()
        st = os.stat(open_tmp / "run" / "bms.sock")
        assert (st.st_mode & 0o777, st.st_gid) == (0o660, postfix_gid)
        hello = subprocess.run([str(installed.python), "-c", CONNECT,
                                str(open_tmp / "run" / "bms.sock")],
                               user="postfix", group="postfix", extra_groups=[], cwd="/",
                               capture_output=True, text=True, timeout=30, check=False)
        assert (hello.returncode, hello.stdout) == (0, "00\n"), hello.stderr  # OptNeg reply
        assert not [m for m in d.messages() if "only mail and root" in m]
    finally:
        assert d.stop() == 0
