"""``systemd/bms.service``: what the unit must say, checked by reading it, and
``systemd-analyze verify`` where that works (systemd installed, no running
systemd needed)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from testbed.bmsd import REPO

from bmslib import exitcodes

UNIT = REPO / "systemd" / "bms.service"
BIN = "/opt/bms/bin/bms"  # the README's venv recipe

# Keys of systemd.unit(5), systemd.service(5), systemd.exec(5), systemd.kill(5)
# that the unit may use; a typo'd key is an error here, not a silent no-op.
KNOWN = {
    "Unit": {"Description", "Documentation", "After", "Before", "Wants", "Requires",
             "Conflicts", "PartOf", "ConditionPathExists"},
    "Service": {
        "Type", "NotifyAccess", "ExecStart", "ExecStartPre", "ExecReload", "ExecStop",
        "KillMode", "KillSignal", "TimeoutStopSec", "TimeoutStartSec", "Restart",
        "RestartSec", "RestartPreventExitStatus", "SupplementaryGroups", "User", "Group",
        "UMask", "RuntimeDirectory", "RuntimeDirectoryMode",
        "RuntimeDirectoryPreserve", "StateDirectory", "StateDirectoryMode", "LogsDirectory",
        "LogsDirectoryMode", "NoNewPrivileges", "ProtectSystem", "ReadWritePaths",
        "PrivateTmp", "ProtectHome", "PrivateDevices", "ProtectKernelTunables",
        "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock",
        "ProtectHostname", "RestrictAddressFamilies", "RestrictNamespaces",
        "RestrictRealtime", "RestrictSUIDSGID", "LockPersonality",
        "SystemCallArchitectures", "CapabilityBoundingSet", "AmbientCapabilities",
        "Environment", "EnvironmentFile", "WorkingDirectory", "PIDFile"},
    "Install": {"WantedBy", "RequiredBy", "Alias"},
}


def parse(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (a key may repeat); comments and blank lines skipped."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            assert section not in out, f"line {n}: [{section}] twice"
            out[section] = {}
            continue
        key, sep, value = line.partition("=")
        assert sep and section is not None, f"line {n}: not 'Key=value': {raw!r}"
        out[section].setdefault(key, []).append(value)
    return out


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, (section, key, values)
    return values[0]


def test_unit_says_what_bms_needs() -> None:
    unit = parse(UNIT.read_text())
    assert set(unit) == set(KNOWN)
    for section, keys in unit.items():
        unknown = set(keys) - KNOWN[section]
        assert not unknown, f"[{section}] unknown keys {unknown}"
    service = unit["Service"]
    assert one(unit, "Service", "Type") == "notify"  # bms sends READY=1
    assert one(unit, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(unit, "Service", "User") == "mail"
    start = one(unit, "Service", "ExecStart").split()
    assert start[0] == BIN and "-c" in start
    # The pidfile lies where logrotate's postrotate looks for it.
    pidfile = start[start.index("--pidfile") + 1]
    assert pidfile in (REPO / "logrotate" / "bms").read_text()
    assert pidfile.startswith("/run/" + one(unit, "Service", "RuntimeDirectory") + "/")
    # Hardening that leaves the socket, data and log directories writable.
    assert one(unit, "Service", "NoNewPrivileges") == "yes"
    assert one(unit, "Service", "ProtectSystem") in ("full", "strict")
    writable = set(one(unit, "Service", "ReadWritePaths").split())
    assert {"-/var/lib/milter", "-/var/log/milter", "-/run/milter"} <= writable
    assert "AF_UNIX" in one(unit, "Service", "RestrictAddressFamilies").split()
    assert "PrivateTmp" in service  # safe: the default tempdir is not /tmp
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    # Configuration errors are not restarted forever.
    assert set(one(unit, "Service", "RestartPreventExitStatus").split()) == {
        str(exitcodes.USAGE), str(exitcodes.NOPERM), str(exitcodes.CONFIG)}
    assert "SupplementaryGroups=postfix" in UNIT.read_text()  # the documented drop-in


def test_unit_defaults_match_the_config_defaults() -> None:
    """The directories systemd makes are the ones the default config uses."""
    from bmslib.config import load_config

    cfg = load_config([])
    unit = parse(UNIT.read_text())
    assert str(cfg.get("milter", "socket")).startswith(
        "/var/run/" + one(unit, "Service", "RuntimeDirectory") + "/")
    assert cfg.get("milter", "datadir") == "/var/lib/" + one(unit, "Service", "StateDirectory")
    assert str(cfg.get("milter", "tempdir")).startswith(
        "/var/log/" + one(unit, "Service", "LogsDirectory") + "/")
    config = one(unit, "Service", "ExecStart").split()[2]
    assert config == "/etc/mail/pymilter.cfg"


def _analyze_works(tmp_path: Path) -> bool:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return False
    probe = tmp_path / "probe.service"
    probe.write_text("[Service]\nExecStart=/bin/true\n")
    out = subprocess.run([tool, "verify", "--man=no", str(probe)], capture_output=True,
                         text=True, timeout=60, check=False)
    return out.returncode == 0


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    if not _analyze_works(tmp_path):
        pytest.skip("systemd-analyze is not installed or does not work here")
    # ExecStart must name an existing executable: ours, where the test runs.
    bms = Path(sys.executable).parent / "bms"
    assert bms.exists(), bms
    unit = tmp_path / "bms.service"
    unit.write_text(UNIT.read_text().replace(BIN, str(bms)))
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    # Unknown keys and bad values are only warnings: there must be none.
    assert out.stdout + out.stderr == "", out.stdout + out.stderr
