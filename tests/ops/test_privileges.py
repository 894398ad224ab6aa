"""``[milter] user``/``group``/``socket_mode``/``socket_group``: the options,
the decisions (with fake account tables), the socket file's group and mode
on a real unix socket, and, when the tests run as root, a real switch to an
unprivileged user in a child process."""

from __future__ import annotations

import grp
import json
import os
import pwd
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from testbed.bmsd import REPO

from bmslib import exitcodes, privileges
from bmslib.config import ConfigError, load_config
from bmslib.privileges import Account, DropPlan, PrivilegeError, SocketPlan

from .helpers import Daemon, Installed, run_bms, runs_as, write_config

USERS = {"mail": Account("mail", 8, 8), "alice": Account("alice", 1000, 1000),
         "root": Account("root", 0, 0)}
GROUPS = {"mail": 8, "postfix": 110, "alice": 1000}


def users(name: str) -> Account | None:
    if name.isdigit():
        return next((a for a in USERS.values() if a.uid == int(name)), None)
    return USERS.get(name)


def groups(name: str) -> int | None:
    return int(name) if name.isdigit() else GROUPS.get(name)


def plan(user: str | None, group: str | None = None, euid: int = 0) -> DropPlan:
    return privileges.plan(user, group, euid=euid, users=users, groups=groups)


# --- options -----------------------------------------------------------------------

def test_options_default_to_unset(tmp_path: Path) -> None:
    cfg = load_config([])
    for option in ("user", "group", "socket_mode", "socket_group"):
        assert cfg.get("milter", option) is None


def test_options_parse(tmp_path: Path) -> None:
    path = tmp_path / "c.cfg"
    path.write_text("[milter]\nuser = mail\ngroup = mail\nsocket_mode = 0660\n"
                    "socket_group = postfix\n")
    cfg = load_config([str(path)])
    assert cfg.get("milter", "socket_mode") == 0o660
    assert (cfg.get("milter", "user"), cfg.get("milter", "group"),
            cfg.get("milter", "socket_group")) == ("mail", "mail", "postfix")
    path.write_text("[milter]\nsocket_mode = 0o117\n")
    assert load_config([str(path)]).get("milter", "socket_mode") == 0o117


@pytest.mark.parametrize("value", ["rw-rw----", "0668", "1777", "66O"])
def test_bad_socket_mode_is_one_line(tmp_path: Path, value: str) -> None:
    path = tmp_path / "c.cfg"
    path.write_text(f"[milter]\nsocket_mode = {value}\n")
    with pytest.raises(ConfigError) as err:
        load_config([str(path)])
    assert str(err.value) == (f"{path}: [milter] socket_mode: expected an octal file mode "
                              f"from 000 to 777, like 007 or 0o117, got {value!r}")


# --- decisions ---------------------------------------------------------------------

def test_no_user_means_no_switch() -> None:
    assert plan(None) == DropPlan(None)
    assert plan("") == DropPlan(None)


def test_root_switches_to_the_user_and_its_group() -> None:
    assert plan("mail") == DropPlan(Account("mail", 8, 8))
    assert plan("8") == DropPlan(Account("mail", 8, 8))  # a numeric uid
    assert plan("mail", "postfix") == DropPlan(Account("mail", 8, 110))


def test_unknown_names_refuse_in_one_line() -> None:
    with pytest.raises(PrivilegeError, match=r"^\[milter\] user: no such user 'nosuch'$"):
        plan("nosuch")
    with pytest.raises(PrivilegeError, match=r"^\[milter\] user: no such user 'nosuch'$"):
        plan("nosuch", euid=1000)  # a typo is an error as any user
    with pytest.raises(PrivilegeError, match=r"^\[milter\] group: no such group 'nogrp'$"):
        plan("mail", "nogrp")
    with pytest.raises(PrivilegeError, match=r"^\[milter\] group: needs \[milter\] user$"):
        plan(None, "mail")
    with pytest.raises(PrivilegeError,
                       match=r"^\[milter\] socket_group: no such group 'nogrp'$"):
        privileges.socket_plan(DropPlan(None), "nogrp", None, groups=groups)


def test_not_root_keeps_running_with_one_warning() -> None:
    assert plan("alice", euid=1000) == DropPlan(None)  # already that user: silent
    assert plan("mail", euid=1000) == DropPlan(
        None, "[milter] user = mail: not started as root, so running as user alice")
    assert plan("mail", euid=4321).warning == (
        "[milter] user = mail: not started as root, so running as user 4321")


def test_socket_plan() -> None:
    as_mail = plan("mail")
    assert privileges.socket_plan(as_mail, None, None, groups=groups) == SocketPlan(8, 8)
    assert privileges.socket_plan(as_mail, "postfix", 0o660, groups=groups) == \
        SocketPlan(8, 110, 0o660)
    assert privileges.socket_plan(DropPlan(None), "postfix", 0o660, groups=groups) == \
        SocketPlan(None, 110, 0o660)
    assert privileges.socket_plan(DropPlan(None), None, None, groups=groups).empty


def test_system_lookups() -> None:
    me = pwd.getpwuid(os.getuid())
    assert privileges.system_user(me.pw_name) == Account(me.pw_name, me.pw_uid, me.pw_gid)
    assert privileges.system_user(str(me.pw_uid)) == Account(me.pw_name, me.pw_uid,
                                                             me.pw_gid)
    assert privileges.system_user("no-such-user-bms") is None
    assert privileges.system_group(grp.getgrgid(os.getgid()).gr_name) == os.getgid()
    assert privileges.system_group("no-such-group-bms") is None


# --- the socket file ---------------------------------------------------------------

def _bound(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    return sock


def test_socket_group_and_mode_on_a_real_socket(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    my_group = grp.getgrgid(os.getgid()).gr_name
    with _bound(path):
        privileges.apply_socket(str(path),
                                privileges.socket_plan(DropPlan(None), my_group, 0o660))
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o660, os.getgid())
        privileges.apply_socket(str(path), SocketPlan(mode=0o600))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(PrivilegeError, match=r"^socket .*missing\.sock: cannot set"):
        privileges.apply_socket(str(tmp_path / "missing.sock"), SocketPlan(mode=0o600))


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_socket_owner_as_root(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    nobody = pwd.getpwnam("nobody")
    with _bound(path):
        privileges.apply_socket(str(path), SocketPlan(nobody.pw_uid, 8, 0o640))
        st = os.stat(path)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (nobody.pw_uid, 8, 0o640)


def test_daemon_applies_socket_mode_and_group(tmp_path: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    cfg = write_config(tmp_path, {"milter": {"socket_mode": "0604", "socket_group": group}})
    d = Daemon(tmp_path, cfg)
    try:
        d.wait_ready()
        st = os.stat(tmp_path / "run" / "bms.sock")
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o604, os.getgid())
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize(("args", "sections", "expected"), [
    (("--user", "no-such-user-bms"), {}, "bms: [milter] user: no such user "
                                         "'no-such-user-bms'\n"),
    ((), {"milter": {"user": "no-such-user-bms"}},
     "bms: [milter] user: no such user 'no-such-user-bms'\n"),
    ((), {"milter": {"socket_group": "no-such-group-bms"}},
     "bms: [milter] socket_group: no such group 'no-such-group-bms'\n"),
])
def test_daemon_refuses_unknown_names_in_one_line(
        tmp_path: Path, args: tuple[str, ...], sections: dict[str, dict[str, str]],
        expected: str) -> None:
    cfg = write_config(tmp_path, sections)
    out = run_bms("-c", str(cfg), *args)
    assert (out.returncode, out.stderr) == (exitcodes.CONFIG, expected)
    assert not (tmp_path / "run" / "bms.sock").exists()


# --- a real switch (root only) -----------------------------------------------------

DROP = """
import json, os, sys
from bmslib import privileges
drop = privileges.plan(sys.argv[1], sys.argv[2] or None, euid=os.geteuid())
privileges.drop(drop.target)
try:
    os.setuid(0)
    regained = True
except PermissionError:
    regained = False
print(json.dumps({"ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()],
                  "groups": sorted(os.getgroups()), "regained": regained}))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
@pytest.mark.parametrize("group", ["", "mail"])
def test_real_switch_to_nobody(group: str) -> None:
    out = subprocess.run([sys.executable, "-c", DROP, "nobody", group], capture_output=True,
                         text=True, cwd=REPO, timeout=60, check=False,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    nobody = pwd.getpwnam("nobody")
    gid = grp.getgrnam(group).gr_gid if group else nobody.pw_gid
    assert got["ids"] == [nobody.pw_uid, nobody.pw_uid, gid, gid]
    assert 0 not in got["groups"]  # root's supplementary groups are gone
    assert got["regained"] is False


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start as another user")
def test_not_root_with_another_user_warns_and_runs(installed: Installed,
                                                   open_tmp: Path) -> None:
    """Started as nobody with [milter] user = mail: one warning, and it serves."""
    if installed.drop_user is None or not runs_as("nobody", installed.python, "import bms"):
        pytest.skip("no interpreter here that user nobody can run")
    cfg = write_config(open_tmp, {"milter": {"user": "mail"}})
    for sub in ("run", "log", "lib", "save"):
        (open_tmp / sub).mkdir()
        os.chown(open_tmp / sub, pwd.getpwnam("nobody").pw_uid, -1)
    d = Daemon(open_tmp, cfg, user="nobody", python=str(installed.python), cwd=Path("/"))
    try:
        d.wait_ready()
        warnings = [m for m in d.messages() if "not started as root" in m]
        assert warnings == ["[milter] user = mail: not started as root, so running as "
                            "user nobody"]
        assert os.stat(open_tmp / "run" / "bms.sock").st_uid == pwd.getpwnam("nobody").pw_uid
    finally:
        assert d.stop() == 0
