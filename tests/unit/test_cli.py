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


def test_mta_config_names_the_sendmail_macros_and_unix_socket_needs() -> None:
    unix = bms.mta_config_lines("unix:/run/milter/bms.sock", "bms")
    assert "sendmail.cf: O Milter.macros.connect=j, _, {daemon_name}, {daemon_port}, " \
           "{if_name}, {if_addr}" in unix
    notes = [line for line in unix if line.startswith("note: ")]
    assert len(notes) == 2
    assert "socket_group = postfix, socket_mode = 0660" in notes[0]
    assert "chroot" in notes[1] and "/var/spool/postfix" in notes[1]
    inet = bms.mta_config_lines("inet:8894@127.0.0.1", "bms")
    assert not [line for line in inet if line.startswith("note: ")]
