"""``bms ban|whitelist|blacklist|greylist`` (bmslib.cli) against the SQLite
store and a real redis-server (database 4, flushed for each test): what each
action prints and its exit status, and that the change is in the store the
daemon reads (checked through the store's own interface)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from testbed.redisd import RedisServer
from testbed.redisd import redis_server as redis_server  # the session fixture

import bms
from bmslib.config import load_config
from bmslib.interfaces import AdminStore
from bmslib.policy.greylist import GreylistSettings
from bmslib.runtime import open_store

REDIS_DB = 4
S = GreylistSettings(time_minutes=10)
KEY = ("198.51.100.0/24", "someone@example.com", "rcpt@example.test")


@pytest.fixture(params=["sqlite", "redis"])
def cfg(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A configuration naming the backend; the greylist time is 10 minutes."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        backend = server.empty_database(REDIS_DB)
    else:
        backend = f"sqlite:{tmp_path / 'state.sqlite'}"
    path = tmp_path / "pymilter.cfg"
    path.write_text(f"[milter]\ndatadir = {tmp_path}\n[greylist]\nenabled = 1\ntime = 10\n"
                    f"[state]\nbackend = {backend}\n")
    return path


@pytest.fixture
def store(cfg: Path) -> Iterator[AdminStore]:
    """The store the daemon would open with ``cfg``."""
    s = open_store(load_config([str(cfg)]))
    yield s
    s.close()


def run(capsys: pytest.CaptureFixture[str], cfg: Path, *args: str) -> tuple[int, str]:
    """``bms -c cfg ARGS``: exit status and stdout (stderr must be empty on success)."""
    code = bms.main(["-c", str(cfg), *args])
    out, err = capsys.readouterr()
    if code != 2:
        assert err == "", err
    return code, out


def test_ban_add_list_del(capsys: pytest.CaptureFixture[str], cfg: Path,
                          store: AdminStore) -> None:
    now = time.time()
    assert run(capsys, cfg, "ban", "add", "198.51.100.7", "--reason", "spam run") == (
        0, "banned ip 198.51.100.7 until never\n")
    code, out = run(capsys, cfg, "ban", "add", "*.Bulk.test", "--days", "2")
    assert code == 0 and out.startswith("banned domain *.bulk.test until 20"), out
    assert store.ip_banned("198.51.100.7", now + 1000 * 86400)
    assert store.domain_banned("mx.bulk.test", now + 86400)
    assert not store.domain_banned("mx.bulk.test", now + 3 * 86400)

    code, out = run(capsys, cfg, "ban", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["KIND", "BANNED", "UNTIL", "REASON"], out
    assert lines[1].split()[:2] == ["domain", "*.bulk.test"] and lines[1].endswith("manual")
    assert lines[2].split() == ["ip", "198.51.100.7", "never", "spam", "run"], out
    code, out = run(capsys, cfg, "ban", "list", "--json")
    listed = json.loads(out)
    assert [(b["kind"], b["key"], b["reason"]) for b in listed] == [
        ("domain", "*.bulk.test", "manual"), ("ip", "198.51.100.7", "spam run")]
    assert listed[1]["until"] is None and listed[0]["until"] > now + 86400

    assert run(capsys, cfg, "ban", "del", "198.51.100.7") == (
        0, "ban of ip 198.51.100.7 lifted\n")
    assert not store.ip_banned("198.51.100.7", now)
    assert run(capsys, cfg, "ban", "del", "198.51.100.7") == (
        1, "ip 198.51.100.7 was not banned\n")
    assert run(capsys, cfg, "ban", "del", "*.BULK.test")[0] == 0
    assert run(capsys, cfg, "ban", "list", "--json") == (0, "[]\n")
    # Any spelling of an address is the one the daemon compares with.
    assert run(capsys, cfg, "ban", "add", "::ffff:192.0.2.8")[1] == (
        "banned ip 192.0.2.8 until never\n")
    assert run(capsys, cfg, "ban", "add", "[IPv6:2001:DB8:0::1]")[1] == (
        "banned ip 2001:db8::1 until never\n")
    assert store.ip_banned("192.0.2.8", now) and store.ip_banned("2001:db8::1", now)
    assert run(capsys, cfg, "ban", "del", "2001:0db8::0:1")[0] == 0


def test_ban_refuses_what_is_not_an_address_or_domain(
        capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    assert bms.main(["-c", str(cfg), "ban", "add", "bad name\x1b[1m"]) == 2
    _, err = capsys.readouterr()
    assert err == "bms ban: not an IP address, domain or *.suffix: bad name\\x1b[1m\n"
    with pytest.raises(SystemExit) as exc:
        bms.main(["-c", str(cfg), "ban", "add", "192.0.2.1", "--days", "-1"])
    assert exc.value.code == 2
    assert "days must be a positive number" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["whitelist", "blacklist"])
def test_address_lists(capsys: pytest.CaptureFixture[str], cfg: Path, store: AdminStore,
                       kind: str) -> None:
    now = time.time()
    assert run(capsys, cfg, kind, "add", "Friend@Example.com") == (
        0, f"{kind}: added friend@example.com until never\n")
    code, out = run(capsys, cfg, kind, "add", "@example.org", "--days", "1")
    assert code == 0 and out.startswith(f"{kind}: added @example.org until 20"), out
    assert store.listed(kind, "friend@example.com", now + 1000 * 86400)
    assert store.listed(kind, "anyone@EXAMPLE.org", now)
    assert not store.listed(kind, "anyone@example.org", now + 2 * 86400)
    other = "blacklist" if kind == "whitelist" else "whitelist"
    assert not store.listed(other, "friend@example.com", now)

    code, out = run(capsys, cfg, kind, "list")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == [
        "ENTRY", "@example.org", "friend@example.com"], out
    code, out = run(capsys, cfg, kind, "list", "--json")
    assert [(e["entry"], e["until"]) for e in json.loads(out)][1] == (
        "friend@example.com", None)

    assert run(capsys, cfg, kind, "del", "friend@example.com") == (
        0, f"{kind}: deleted friend@example.com\n")
    assert not store.listed(kind, "friend@example.com", now)
    assert run(capsys, cfg, kind, "del", "friend@example.com") == (
        1, f"{kind}: friend@example.com was not listed\n")
    assert run(capsys, cfg, kind, "del", "@example.org")[0] == 0
    assert run(capsys, cfg, kind, "list") == (0, "ENTRY  UNTIL\n")


def test_greylist_list_pass_flush(capsys: pytest.CaptureFixture[str], cfg: Path,
                                  store: AdminStore) -> None:
    now = time.time()
    other = ("pass.test", "friend@pass.test", "rcpt@example.test")
    for key in (KEY, other):
        assert not store.greylist(key, now, S).passed
    code, out = run(capsys, cfg, "greylist", "list", "--client", "198.51.100.66")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 2, out
    assert lines[1].split()[:3] == list(KEY) and lines[1].split()[-2:] == ["waiting", "0"]
    code, out = run(capsys, cfg, "greylist", "list", "--json")
    assert [(e["origin"], e["passed"]) for e in json.loads(out)] == [
        (KEY[0], False), ("pass.test", False)]

    assert run(capsys, cfg, "greylist", "pass", "--sender", "@example.com") == (
        0, "greylist: 1 triplet passed\n")
    assert store.greylist(KEY, now + 1, S).passed  # at once, not after 10 minutes
    assert not store.greylist(other, now + 1, S).passed
    assert run(capsys, cfg, "greylist", "pass", "--sender", "nobody@example.com") == (
        1, "greylist: 0 triplets passed\n")

    assert run(capsys, cfg, "greylist", "flush", "--recipient", "RCPT@example.test",
               "--client", "198.51.100.1") == (0, "greylist: 1 triplet flushed\n")
    assert store.greylist(KEY, now + 2, S).retry_after == S.time  # afresh
    assert run(capsys, cfg, "greylist", "flush") == (0, "greylist: 2 triplets flushed\n")
    assert run(capsys, cfg, "greylist", "list", "--json") == (0, "[]\n")


def test_config_after_the_subcommand_and_a_store_that_is_down(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = tmp_path / "down.cfg"
    cfg.write_text("[state]\nbackend = redis://127.0.0.1:1/0\n")
    assert bms.main(["ban", "list", "-c", str(cfg)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("bms ban: state store redis://127.0.0.1:1/0: "), err
    assert len(err.splitlines()) == 1, err
    bad = tmp_path / "bad.cfg"
    bad.write_text("[state]\nbackend = nowhere\n")
    assert bms.main(["-c", str(bad), "whitelist", "list"]) == 2
    assert capsys.readouterr().err.startswith("bms whitelist: ")


def test_inf_expiry_of_a_daemon_ban_shows_never(capsys: pytest.CaptureFixture[str],
                                                cfg: Path, store: AdminStore) -> None:
    store.ban_ip("192.0.2.5", math.inf, "8 demerits, last: unknown user")
    code, out = run(capsys, cfg, "ban", "list")
    assert code == 0 and out.splitlines()[1].split()[:3] == ["ip", "192.0.2.5", "never"], out


def test_stats_counts_the_store(capsys: pytest.CaptureFixture[str], cfg: Path,
                                store: AdminStore) -> None:
    now = time.time()
    store.ban_ip("192.0.2.5", now + 3600, "x")
    store.ban_domain("*.bulk.test", now + 3600, "x")
    store.ban_domain("spam.test", now + 3600, "x")
    store.list_add("whitelist", "a@example.com", math.inf)
    store.list_add("blacklist", "b@example.com", math.inf)
    store.greylist(KEY, now, S)
    store.greylist(("198.51.100.0/24", "x@example.com", "y@example.test"), now - 700, S)
    store.greylist(("198.51.100.0/24", "x@example.com", "y@example.test"), now, S)  # passes
    code, out = run(capsys, cfg, "stats", "--json")
    figures = json.loads(out)["store"]
    assert code == 0 and figures["store"] == store.path, out
    assert {k: v for k, v in figures.items() if k != "store"} == {
        "banned_ips": 1, "banned_domains": 2, "whitelist": 1, "blacklist": 1,
        "greylist_passed": 1, "greylist_waiting": 1}
    assert json.loads(out)["live"] is None


def with_internal_clients(cfg: Path) -> None:
    """``cfg`` with 10.0.0.0/8 internal (no SPF, so no DNS) and no access file."""
    text = cfg.read_text().replace(
        "[milter]\n", "[milter]\ninternal_connect = 10.0.0.0/8\ninternal_domains = example.org\n")
    cfg.write_text(text + "[spf]\naccess_file =\n[dns]\nnameservers = 127.0.0.1:9\n"
                          "timeout = 0.2\nlifetime = 0.3\n")


def offline(capsys: pytest.CaptureFixture[str], cfg: Path, *extra: str) -> tuple[int, str]:
    eml = cfg.parent / "m.eml"
    eml.write_bytes(b"From: a@example.org\nTo: x@example.com\nSubject: hi\n\nHello.\n")
    return run(capsys, cfg, "test", str(eml), "--client", "10.1.2.3", "--ptr", "pc.example.org",
               "--from", "a@example.org", "--rcpt", "x@example.com", *extra)


def test_bms_test_reads_the_store_and_writes_it_only_with_commit(
        capsys: pytest.CaptureFixture[str], cfg: Path, store: AdminStore) -> None:
    with_internal_clients(cfg)
    store.ban_ip("10.1.2.3", math.inf, "abuse report")
    code, out = offline(capsys, cfg)
    assert code == 1, out
    assert "BAN IN FORCE: ip 10.1.2.3 (abuse report)" in out, out
    assert "data: REJECT 550 5.7.1 Banned for repeated policy violations." in out, out
    store.unban("ip", "10.1.2.3")
    code, out = offline(capsys, cfg)
    assert code == 0 and out.splitlines()[-1].startswith("verdict: accept"), out
    assert not store.listed("whitelist", "x@example.com", time.time())  # nothing written
    code, out = offline(capsys, cfg, "--commit")
    assert code == 0 and out.splitlines()[-1] == "verdict: accept", out
    assert store.listed("whitelist", "x@example.com", time.time())  # as the daemon would
