"""``bms --check-config`` runs every check of a start, as the user bms runs
as, and exits with the same code the start would (bmslib.exitcodes)."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

import pytest

from bmslib import exitcodes

from .helpers import Installed, bms_command, run_bms, write_config

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def check(cfg: Path, *args: str, python: str | None = None) -> subprocess.CompletedProcess[str]:
    if python is None:
        return run_bms("-c", str(cfg), "--check-config", *args)
    return subprocess.run(bms_command("-c", str(cfg), "--check-config", *args, python=python),
                          capture_output=True, text=True, cwd="/", timeout=60, check=False)


def start(cfg: Path, python: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = bms_command("-c", str(cfg), "--foreground", "--logdir", "-",
                      **({} if python is None else {"python": python}))
    return subprocess.run(cmd, capture_output=True, text=True, cwd="/", timeout=60, check=False)


def dirs(base: Path, owner: str | None = None) -> None:
    for sub in ("run", "log", "lib", "save"):
        (base / sub).mkdir(exist_ok=True)
        if owner:
            os.chown(base / sub, pwd.getpwnam(owner).pw_uid, -1)


def test_unknown_user_fails_check_and_start_alike(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"milter": {"user": "nosuchuser12"}})
    dirs(tmp_path)
    for out in (check(cfg), start(cfg)):
        assert out.returncode == exitcodes.CONFIG, out
        assert out.stderr == "bms: [milter] user: no such user 'nosuchuser12'\n"


@ROOT_ONLY
def test_tempdir_not_writable_by_the_user(installed: Installed, open_tmp: Path) -> None:
    """As root with [milter] user = mail: the check switches to mail first, so
    a tempdir only root can write is found before the start fails on it."""
    if installed.drop_user is None:
        pytest.skip("no interpreter here that user mail can run")
    cfg = write_config(open_tmp, {"milter": {"user": installed.drop_user}})
    dirs(open_tmp, installed.drop_user)
    os.chown(open_tmp / "save", 0, 0)
    os.chmod(open_tmp / "save", 0o755)
    for out in (check(cfg, python=str(installed.python)),
                start(cfg, python=str(installed.python))):
        assert out.returncode == exitcodes.CONFIG, out
        assert out.stderr.splitlines()[-1] == (
            f"bms: {cfg}: [milter] tempdir: user {installed.drop_user} cannot write in "
            f"{open_tmp / 'save'} (owner root, mode 0755); give the directory to that user")
    os.chown(open_tmp / "save", pwd.getpwnam(installed.drop_user).pw_uid, -1)
    out = check(cfg, python=str(installed.python))
    assert out.returncode == exitcodes.OK, out
    assert not (open_tmp / "lib" / "bms.sqlite").exists() or \
        (open_tmp / "lib" / "bms.sqlite").stat().st_uid == pwd.getpwnam(
            installed.drop_user).pw_uid  # never a root-owned file the start cannot open


def check_access(tmp_path: Path, text: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    access = tmp_path / "access"
    access.write_text(text)
    cfg = write_config(tmp_path, {"spf": {"access_file": str(access)}})
    dirs(tmp_path)
    return access, check(cfg)


def test_bad_access_file_values_exit_with_file_and_line(tmp_path: Path) -> None:
    access, out = check_access(tmp_path, "SPF-Fail:example.com REJECT\n"
                                         "SPF-Neutral:aol.com MAYBE\nConnect:192.0.2.1\n")
    assert out.returncode == exitcodes.CONFIG, out
    assert out.stderr.splitlines() == [
        f"bms: {access}:2: 'SPF-Neutral:aol.com': unknown value 'MAYBE' (expected OK, CBV, "
        "DSN, REJECT, TEMPFAIL, WHITELIST, BLACKLIST, BAN, DISCARD, QUARANTINE, RELAY, SKIP "
        "or ERROR:...)",
        f"bms: {access}:3: 'Connect:192.0.2.1': no value"]


def test_near_miss_tag_is_warned_with_did_you_mean(tmp_path: Path) -> None:
    access, out = check_access(tmp_path, "SPF-Fail:example.com REJECT\n"
                                         "SPF-Fial:example.org REJECT\nConnect:10 OK\n"
                                         "Spam:friend@example.com OK\n")
    assert out.returncode == exitcodes.OK, out
    assert [line for line in out.stderr.splitlines() if str(access) in line] == [
        f"bms: warning: {access}:2: unknown tag 'spf-fial', never looked up (did you "
        "mean SPF-Fail?)"]


def test_socket_host_port_gets_a_hint(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    out = run_bms("-c", str(cfg), "--socket", "127.0.0.1:8894", "--check-config")
    assert out.returncode == exitcodes.CONFIG
    assert out.stderr.endswith("; for TCP write inet:PORT@HOST, here inet:8894@127.0.0.1\n")


def test_help_documents_the_exit_codes() -> None:
    out = run_bms("--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert exitcodes.HELP in text
