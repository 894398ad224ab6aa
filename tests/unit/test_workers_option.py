"""``[milter] workers`` and ``--workers``: a number or ``auto`` (one per core)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import bms
from bmslib.config import ConfigError, cores, load_config


def _load(tmp_path: Path, value: str) -> object:
    path = tmp_path / "pymilter.cfg"
    path.write_text(f"[milter]\nworkers = {value}\n", encoding="utf-8")
    return load_config([str(path)]).get("milter", "workers")


def test_cores_follows_the_affinity_mask() -> None:
    assert cores() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value", ["auto", "AUTO", " auto "])
def test_auto_is_one_worker_per_core(tmp_path: Path, value: str) -> None:
    assert _load(tmp_path, value) == cores()


def test_a_number_is_kept(tmp_path: Path) -> None:
    assert _load(tmp_path, "3") == 3


@pytest.mark.parametrize("value", ["0", "257", "lots", "2.5"])
def test_bad_values_name_both_forms(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, value)
    message = str(info.value)
    assert "[milter] workers" in message
    assert "or auto (one per core)" in message
    assert repr(value) in message


def test_command_line_takes_auto_and_refuses_junk(capsys: pytest.CaptureFixture[str]) -> None:
    assert bms.parse_args(["--workers", "auto"]).workers == cores()
    assert bms.parse_args(["--workers", "2"]).workers == 2
    with pytest.raises(SystemExit) as exit_info:
        bms.parse_args(["--workers", "0"])
    assert exit_info.value.code == 2
    assert "--workers: expected an integer from 1 to 256, or auto" in capsys.readouterr().err
