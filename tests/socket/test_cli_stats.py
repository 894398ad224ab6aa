"""``bms stats`` against a running daemon with ``[metrics] listen``: the
store's figures (after ``bms ban add`` and ``whitelist add``) and the live
ones scraped from the endpoint after two connections (one accept, one
reject), as text and JSON; and without a reachable endpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from mtaclient import internal_and_zombie_sessions
from testbed.bmsd import REPO, BmsDaemon, config_text
from testbed.milter import free_port

BASE = {
    "milter": {"internal_connect": "192.0.2.0/24", "internal_domains": "example.net"},
    "dns": {"nameservers": "127.0.0.1:9", "timeout": "0.5", "lifetime": "1"},
}


def bms(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bms", "-c", str(cfg), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=60, check=False)


def test_stats_of_the_store_and_the_running_daemon(tmp_path: Path) -> None:
    port = free_port()
    sections = {**BASE, "metrics": {"listen": f"127.0.0.1:{port}"}}
    with BmsDaemon(sections, "", directory=str(tmp_path)) as d:
        assert bms(d.cfg, "ban", "add", "198.51.100.1").returncode == 0
        assert bms(d.cfg, "ban", "add", "spam.test").returncode == 0
        assert bms(d.cfg, "whitelist", "add", "friend@example.org").returncode == 0
        internal_and_zombie_sessions(d.port)
        out = bms(d.cfg, "stats", "--json")
        assert out.returncode == 0 and out.stderr == "", out
        figures: dict[str, Any] = json.loads(out.stdout)
        text = bms(d.cfg, "stats")
    store, live = figures["store"], figures["live"]
    assert (store["banned_ips"], store["banned_domains"], store["whitelist"],
            store["blacklist"]) == (1, 1, 3, 0), store  # + bob and carol, auto-whitelisted
    assert (store["greylist_passed"], store["greylist_waiting"]) == (0, 0), store
    assert live["url"] == f"http://127.0.0.1:{port}/metrics"
    assert live["connections"] == 2 and live["active_connections"] == 0, live
    assert {(m["verdict"], m["reason"]): m["count"] for m in live["messages"]} == {
        ("accept", "ok"): 1, ("reject", "zombie PC"): 1}, live
    lines = text.stdout.splitlines()
    assert text.returncode == 0 and lines[0].startswith("state store "), text
    assert "  banned IPs         1" in lines and "  connections        2 served, 0 active" in lines
    assert any(line.split() == ["reject", "zombie", "PC", "1"] for line in lines), lines


def test_stats_without_a_reachable_endpoint(tmp_path: Path) -> None:
    cfg = tmp_path / "pymilter.cfg"
    cfg.write_text(config_text({**BASE, "milter": {"datadir": str(tmp_path)},
                                "metrics": {"listen": f"127.0.0.1:{free_port()}"}}))
    out = bms(cfg, "stats")
    assert out.returncode == 2, out
    assert out.stdout.startswith("state store "), out
    assert out.stderr.startswith("bms stats: live figures: http://127.0.0.1:"), out
    assert len(out.stderr.splitlines()) == 1, out
    cfg.write_text(config_text({**BASE, "milter": {"datadir": str(tmp_path)}}))
    out = bms(cfg, "stats")
    assert out.returncode == 0 and "live figures: [metrics] listen is not set" in out.stdout
