"""Configs of the original bms load: its defaults and relative paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bmslib.config import load_config
from bmslib.runtime import RuntimeBuildError, build_runtime


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_privkey_without_domain_is_not_signing(tmp_path: Path) -> None:
    cfg = load_config([write(tmp_path / "m.cfg", "[spf]\naccess_file =\n"
                             "[dkim]\nprivkey = dkim_rsa\n")])
    assert any(w.endswith("[dkim] privkey without [dkim] domain: not signing "
                          "(set domain to sign)") for w in cfg.warnings)


def test_no_access_file_by_default_is_said_once(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: p != "/etc/mail/access" and real(p))
    cfg = load_config([write(tmp_path / "m.cfg", f"[milter]\ndatadir = {tmp_path}\n")])
    said = [w for w in cfg.warnings if "[spf] access_file" in w]
    assert said == ["[spf] access_file not set and /etc/mail/access does not exist: "
                    "no access file, the built-in SPF defaults apply"]
    assert cfg.get("spf", "access_file") == ""


def test_an_access_file_given_but_missing_is_an_error_naming_everything(
        tmp_path: Path) -> None:
    path = write(tmp_path / "m.cfg", f"[milter]\ndatadir = {tmp_path}\n"
                                     "[spf]\naccess_file = /nonexistent/access\n")
    with pytest.raises(RuntimeBuildError) as info:
        build_runtime(load_config([path]))
    assert str(info.value) == (f"{path}: [spf] access_file: /nonexistent/access: "
                               "cannot read: No such file or directory")


def datadir_config(tmp_path: Path, text: str) -> tuple[Path, str]:
    data = tmp_path / "lib"
    data.mkdir()
    return data, write(tmp_path / "m.cfg", f"[milter]\ndatadir = {data}\n"
                                           f"[spf]\naccess_file =\n{text}")


def test_relative_key_is_looked_for_in_datadir_and_the_error_names_it(tmp_path: Path) -> None:
    data, path = datadir_config(tmp_path, "[dkim]\nprivkey = dkim_rsa\ndomain = example.com\n")
    with pytest.raises(RuntimeBuildError) as info:
        build_runtime(load_config([path]))
    assert str(info.value) == (f"{path}: [dkim] privkey: cannot read {data}/dkim_rsa: "
                               "No such file or directory")


def test_relative_word_file_and_store_are_in_datadir(tmp_path: Path) -> None:
    data, path = datadir_config(tmp_path, "[defang]\nfrom_words = file:words\n"
                                          "[state]\nbackend = sqlite:bms.sqlite\n")
    (data / "words").write_text("casino\n# comment\n")
    build_runtime(load_config([path]))
    assert (data / "bms.sqlite").exists()
