"""An admin command started as root switches to ``[milter] user`` before it
touches anything (bmslib.cli.common.config_of), as the daemon does, so the
SQLite state file it may create stays the daemon's; not started as root, or
without a user, it stays who it is; an unknown user is one line, exit 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import bms
from bmslib import privileges
from bmslib.privileges import Account


def run_as(monkeypatch: pytest.MonkeyPatch, euid: int) -> list[Account]:
    dropped: list[Account] = []
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    monkeypatch.setattr(privileges, "drop", dropped.append)
    return dropped


def config(tmp_path: Path, user: str) -> Path:
    cfg = tmp_path / "pymilter.cfg"
    cfg.write_text(f"[milter]\ndatadir = {tmp_path}\nuser = {user}\n")
    return cfg


def test_root_becomes_the_daemon_user_before_opening_the_store(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    dropped = run_as(monkeypatch, 0)
    assert bms.main(["-c", str(config(tmp_path, "mail")), "ban", "list"]) == 0
    assert [a.name for a in dropped] == ["mail"]
    assert capsys.readouterr().out.startswith("KIND")


def test_other_users_stay_who_they_are(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    dropped = run_as(monkeypatch, 1000)
    assert bms.main(["-c", str(config(tmp_path, "mail")), "ban", "list"]) == 0
    cfg = tmp_path / "nouser.cfg"
    cfg.write_text(f"[milter]\ndatadir = {tmp_path}\n")
    dropped_as_root = run_as(monkeypatch, 0)
    assert bms.main(["-c", str(cfg), "whitelist", "list"]) == 0
    assert dropped == [] and dropped_as_root == []
    capsys.readouterr()


def test_an_unknown_user_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    run_as(monkeypatch, 0)
    assert bms.main(["-c", str(config(tmp_path, "no-such-user-here")), "ban", "list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bms ban: [milter] user") and err.count("\n") == 1, err
