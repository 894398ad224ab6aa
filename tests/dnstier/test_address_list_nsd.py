"""Host names in address lists are resolved through the configured DNS (a
real NSD) when the runtime is built: at start, at --check-config and on
every reload; names that do not resolve are warned about."""

from __future__ import annotations

from pathlib import Path

import pytest
from testbed.nsd import CLIENT6_IP, CLIENT_IP, CLIENT_PTR, Nsd

from bmslib.config import load_config
from bmslib.policy.connection import parse_ip
from bmslib.runtime import build_runtime

pytestmark = pytest.mark.e2e


def test_internal_connect_names_resolve_at_build(nsd: Nsd, tmp_path: Path) -> None:
    cfg = tmp_path / "bms.cfg"
    cfg.write_text(f"[milter]\ndatadir = {tmp_path}\n"
                   f"internal_connect = 10.0.0.0/8, {CLIENT_PTR}, nowhere.nxdomain.test\n"
                   f"[spf]\naccess_file =\n[dns]\nnameservers = {nsd.nameserver}\n"
                   "timeout = 1\nlifetime = 2\n")
    runtime = build_runtime(load_config([str(cfg)]))
    assert runtime.warnings == (
        "[milter] internal_connect: host name nowhere.nxdomain.test does not resolve "
        "(no A/AAAA record); it matches no client until it does",)
    internal = runtime.settings.connection.internal_connect
    assert internal.hosts == [("nowhere.nxdomain.test", None)]
    assert internal.matches(parse_ip(CLIENT_IP)) and internal.matches(parse_ip(CLIENT6_IP))
    assert not internal.matches(parse_ip("198.51.100.99"))
