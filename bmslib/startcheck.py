"""The checks of a start that the configuration alone cannot show, shared by
``bms --check-config`` and the start itself, so that "configuration OK" means
the start succeeds: directories writable by the user bms runs as, the socket
directory, access-file lines and near-miss tags, the unix socket's mode.

Every problem is one line naming the option (and its file) and the full path.
"""

from __future__ import annotations

import difflib
import os
import pwd
import re
import stat
from collections.abc import Iterable

from .access import AccessFile
from .config import Config
from .policy.dkimstep import _ACCESS_TAG as DKIM_TAGS
from .policy.spf import HELO_KEYS
from .policy.spf import KEYS as SPF_KEYS
from .runtime_features import where

# Tags bms looks up, and sendmail's own (the file may be shared with sendmail),
# by their lower-case form.
KNOWN_TAGS = {t.lower(): t for t in (
    *SPF_KEYS.values(), *HELO_KEYS.values(), *DKIM_TAGS.values(), "SMTP-Auth",
    "Connect", "From", "To", "Spam", "GreetPause", "ClientRate", "ClientConn", "MailRate",
    "Srv_Features", "Try_TLS", "TLS_Clt", "TLS_Srv", "TLS_Rcpt", "Verify", "Auth")}

_HOST_PORT = re.compile(r"\[?[0-9A-Za-z.:-]+\]?:\d+\Z")


def current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _nearest_existing(path: str) -> str:
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _describe(path: str) -> str:
    st = os.stat(path)
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    return f"owner {owner}, mode {stat.S_IMODE(st.st_mode):04o}"


def directory_problems(config: Config, dirs: Iterable[tuple[str, str]]) -> list[str]:
    """For each ``(kind, path)`` of :func:`bms.writable_dirs` other than the
    socket directory: can the current user create or write it?  (Run after
    the switch to ``[milter] user``.)"""
    problems = []
    for kind, path in dirs:
        if kind == "socketdir":
            continue
        existing = _nearest_existing(path)
        if os.access(existing, os.W_OK | os.X_OK):
            continue
        doing = "write in" if existing == path else f"create {path} in"
        problems.append(f"{where(config, 'milter', kind)}: user {current_user()} cannot "
                        f"{doing} {existing} ({_describe(existing)}); give the directory "
                        "to that user")
    return problems


def socket_dir_missing(config: Config, path: str) -> str | None:
    """The directory of a unix socket that does not exist (yet)."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory):
        return None
    return (f"{where(config, 'milter', 'socket')}: the directory {directory} does not "
            "exist; create it (the systemd unit and milter.init do at start)")


def socket_dir_problem(config: Config, path: str) -> str | None:
    """The directory of a unix socket must exist and be writable by the user
    that binds it (the user bms is started as)."""
    directory = os.path.dirname(os.path.abspath(path))
    missing = socket_dir_missing(config, path)
    if missing:
        return missing
    if not os.access(directory, os.W_OK | os.X_OK):
        return (f"{where(config, 'milter', 'socket')}: user {current_user()} cannot create "
                f"the socket in {directory} ({_describe(directory)})")
    return None


def socket_group_problem(config: Config, gid: int | None) -> str | None:
    """Without root, the socket's group can only be one the process is in
    (systemd: ``SupplementaryGroups=``)."""
    if gid is None or os.geteuid() == 0 or gid == os.getegid() or gid in os.getgroups():
        return None
    return (f"{where(config, 'milter', 'socket_group')}: user {current_user()} is not in "
            f"group {config.get('milter', 'socket_group')} and bms is not started as root; "
            "add the group (systemd: SupplementaryGroups=) or start bms as root")


def near_miss_tags(access: AccessFile) -> list[str]:
    """``FILE:LINE: unknown tag 'SPF-Fial' (did you mean SPF-Fail?)`` lines."""
    out = []
    for tag, line in sorted(access.tags(), key=lambda item: item[1]):
        if tag in KNOWN_TAGS:
            continue
        close = difflib.get_close_matches(tag, list(KNOWN_TAGS), n=1, cutoff=0.75)
        if close:
            out.append(f"{access.path}:{line}: unknown tag {tag!r}, never looked up "
                       f"(did you mean {KNOWN_TAGS[close[0]]}?)")
    return out


def socket_mode_warning(path: str, socket_group: object) -> str | None:
    """A unix socket that only its owner (and root) can write, with no
    ``socket_group``: Postfix's smtpd cannot connect."""
    if socket_group:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o022:
        return None
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    who = "root" if owner == "root" else f"{owner} and root"
    return (f"unix socket {path} is mode {mode:04o} owner {owner}: only {who} (sendmail) "
            "can connect; for Postfix set [milter] socket_group = postfix and "
            "socket_mode = 0660")


def socket_hint(spec: str) -> str:
    """Extra advice for a ``--socket`` value that is a bare HOST:PORT."""
    if _HOST_PORT.match(spec) and not spec.lower().startswith(("inet", "unix", "local")):
        host, _, port = spec.rpartition(":")
        host = host.strip("[]")
        kind = "inet6" if ":" in host else "inet"
        return f"; for TCP write {kind}:PORT@HOST, here {kind}:{port}@{host}"
    return ""
