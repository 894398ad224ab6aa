"""The ``bms`` command line itself (without a daemon)."""

from __future__ import annotations

import pytest

import bms
import bmslib


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        bms.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"bms {bmslib.__version__}"
    assert bmslib.__version__.count(".") == 2
