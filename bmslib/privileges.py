"""Who the daemon runs as, and who may use its unix socket.

Order at startup (``bms.py``): :func:`plan` and :func:`socket_plan` check the
names before anything happens (a user or group that does not exist stops
startup with one line); the socket is bound while still root; then
:func:`apply_socket` sets the socket file's owner, group and mode, and
:func:`drop` switches to the user for good (supplementary groups, gid, uid, in
that order: after ``setuid`` the others can no longer be changed).  Files the
daemon creates later (milter.log, the state database, saved originals) belong
to that user.

Started without root, nothing can be switched: ``[milter] user`` naming
another user gives one warning and the daemon keeps running as it is.
"""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass


class PrivilegeError(Exception):
    """A user or group that cannot be used; ``str()`` is one line."""


@dataclass(frozen=True)
class Account:
    """The identity to switch to: user name, uid and primary gid."""

    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class DropPlan:
    """``target`` is None when nothing is to be switched; ``warning`` is one
    line for the log when the configured user cannot be had."""

    target: Account | None
    warning: str | None = None


@dataclass(frozen=True)
class SocketPlan:
    """What to set on the unix socket file; None leaves that part as it is."""

    uid: int | None = None
    gid: int | None = None
    mode: int | None = None

    @property
    def empty(self) -> bool:
        return self.uid is None and self.gid is None and self.mode is None


UserLookup = Callable[[str], Account | None]
GroupLookup = Callable[[str], int | None]


def system_user(name: str) -> Account | None:
    """The passwd entry for a user name or a numeric uid."""
    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, OverflowError):
        return None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def system_group(name: str) -> int | None:
    """The gid of a group name or a numeric gid."""
    try:
        return grp.getgrgid(int(name)).gr_gid if name.isdigit() else grp.getgrnam(name).gr_gid
    except (KeyError, OverflowError):
        return None


def _user(option: str, name: str, users: UserLookup) -> Account:
    account = users(name)
    if account is None:
        raise PrivilegeError(f"[milter] {option}: no such user {name!r}")
    return account


def _group(option: str, name: str, groups: GroupLookup) -> int:
    gid = groups(name)
    if gid is None:
        raise PrivilegeError(f"[milter] {option}: no such group {name!r}")
    return gid


def plan(user: str | None, group: str | None, *, euid: int,
         users: UserLookup = system_user, groups: GroupLookup = system_group) -> DropPlan:
    """What :func:`drop` should do for ``[milter] user``/``group`` when the
    process runs with effective uid ``euid``."""
    if not user:
        if group:
            raise PrivilegeError("[milter] group: needs [milter] user")
        return DropPlan(None)
    account = _user("user", user, users)
    if group:
        account = Account(account.name, account.uid, _group("group", group, groups))
    if euid == 0:
        return DropPlan(account)
    if account.uid == euid:
        return DropPlan(None)
    me = users(str(euid))
    who = me.name if me is not None else str(euid)
    return DropPlan(None, f"[milter] user = {user}: not started as root, so running as "
                          f"user {who}")


def socket_plan(drop: DropPlan, socket_group: str | None, mode: int | None, *,
                groups: GroupLookup = system_group) -> SocketPlan:
    """Owner, group and mode for the unix socket: owned by the user we switch
    to, in ``socket_group`` (else that user's group), with ``mode``."""
    gid = _group("socket_group", socket_group, groups) if socket_group else None
    if drop.target is not None:
        return SocketPlan(drop.target.uid, drop.target.gid if gid is None else gid, mode)
    return SocketPlan(None, gid, mode)


def apply_socket(path: str, socket: SocketPlan) -> None:
    """Set owner/group, then mode, on the socket file at ``path`` (never
    following a symlink put there)."""
    try:
        if socket.uid is not None or socket.gid is not None:
            os.chown(path, -1 if socket.uid is None else socket.uid,
                     -1 if socket.gid is None else socket.gid, follow_symlinks=False)
        if socket.mode is not None:
            os.chmod(path, socket.mode)
    except OSError as exc:
        raise PrivilegeError(f"socket {path}: cannot set owner/group/mode: "
                             f"{exc.strerror or exc}") from None


def drop(account: Account) -> None:
    """Become ``account`` for good: its groups, its gid, its uid."""
    try:
        os.initgroups(account.name, account.gid)
        os.setgid(account.gid)
        os.setuid(account.uid)
    except OSError as exc:
        raise PrivilegeError(f"cannot switch to user {account.name}: "
                             f"{exc.strerror or exc}") from None
    if (os.getuid(), os.geteuid(), os.getgid(), os.getegid()) != (
            account.uid, account.uid, account.gid, account.gid):
        raise PrivilegeError(f"cannot switch to user {account.name}: ids did not change")
    if account.uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            return
        raise PrivilegeError(f"switched to user {account.name} but root could be regained")
