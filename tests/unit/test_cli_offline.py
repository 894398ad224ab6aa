"""``bms test`` (bmslib.cli.offline) without a network: an internal client
(no SPF, no DNS needed), the store left alone without ``--commit`` and
written with it (the auto-whitelist of an internal sender's recipients),
exit statuses; and the OverlayStore it runs on."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import bms
from bmslib.policy.greylist import GreylistSettings
from bmslib.state.overlay import OverlayStore
from bmslib.state.records import BanEntry, GreylistMatch
from bmslib.state.sqlite import SqliteStore

MESSAGE = b"From: a@example.org\nTo: x@example.com\nSubject: hello\n\nHi there.\n"
S = GreylistSettings()
T0 = 1_700_000_000.0


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "pymilter.cfg"
    path.write_text(f"[milter]\ndatadir = {tmp_path}\ninternal_connect = 10.0.0.0/8\n"
                    "internal_domains = example.org\n[spf]\naccess_file =\n"
                    "[dns]\nnameservers = 127.0.0.1:1\ntimeout = 0.2\nlifetime = 0.3\n"
                    f"[state]\nbackend = sqlite:{tmp_path}/state.sqlite\n")
    (tmp_path / "m.eml").write_bytes(MESSAGE)
    return path


def offline(capsys: pytest.CaptureFixture[str], cfg: Path, *extra: str) -> tuple[int, str]:
    code = bms.main(["-c", str(cfg), "test", str(cfg.parent / "m.eml"), "--client", "10.1.2.3",
                     "--ptr", "pc.example.org", "--from", "a@example.org", "--rcpt",
                     "x@example.com", "--mta-name", "mx.example.org", *extra])
    out, err = capsys.readouterr()
    assert err == ""
    return code, out


def test_internal_mail_is_accepted_and_nothing_is_written(
        capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    code, out = offline(capsys, cfg)
    lines = out.splitlines()
    assert code == 0, out
    assert lines[0].endswith("[test] connect from pc.example.org at (10.1.2.3, 4000) INTERNAL"), out
    assert "connect pc.example.org [10.1.2.3]: CONTINUE" in lines
    assert "helo pc.example.org: CONTINUE" in lines  # the HELO defaults to the PTR name
    assert "rcpt to <x@example.com>: CONTINUE" in lines
    assert any(line.endswith("ACCEPT: 1 recipient, queue id BMSTEST") for line in lines), out
    assert ("edit: add header Authentication-Results: mx.example.org;\\n\\t"
            "iprev=pass policy.iprev=10.1.2.3 (at 0)") in lines, out
    assert lines[-1] == "verdict: accept (nothing was written: no --commit)"
    store = SqliteStore(cfg.parent / "state.sqlite")
    assert store.list_entries("whitelist", 0) == []


def test_commit_writes_what_the_daemon_would(capsys: pytest.CaptureFixture[str],
                                             cfg: Path) -> None:
    code, out = offline(capsys, cfg, "--commit")
    assert code == 0 and out.splitlines()[-1] == "verdict: accept", out
    store = SqliteStore(cfg.parent / "state.sqlite")
    assert [e.entry for e in store.list_entries("whitelist", 0)] == ["x@example.com"]


def test_exit_statuses(capsys: pytest.CaptureFixture[str], cfg: Path) -> None:
    # An outside client: SPF cannot be checked (no DNS server answers): tempfail.
    code = bms.main(["-c", str(cfg), "test", str(cfg.parent / "m.eml"), "--client",
                     "198.51.100.9", "--ptr", "mail.b.example", "--from", "a@b.example",
                     "--rcpt", "x@example.org"])
    out = capsys.readouterr().out
    assert code == 2, out
    assert "mail from <a@b.example>: TEMPFAIL 451-4.3.0 SPF temperror: " in out, out
    assert bms.main(["-c", str(cfg), "test", str(cfg.parent / "m.eml"), "--client", "nowhere",
                     "--from", "a@b", "--rcpt", "c@d"]) == 4
    assert capsys.readouterr().err == "bms test: --client: not an IP address: nowhere\n"
    assert bms.main(["-c", str(cfg), "test", str(cfg.parent / "gone.eml"), "--client",
                     "10.1.2.3", "--from", "a@b", "--rcpt", "c@d"]) == 4
    assert "gone.eml: No such file or directory" in capsys.readouterr().err
    assert bms.main(["-c", str(cfg), "test", str(cfg.parent / "m.eml"), "--client",
                     "10.1.2.3"]) == 4  # a usage error is not "tempfail"
    assert "required: --from, --rcpt" in capsys.readouterr().err


def test_overlay_reads_through_and_writes_nowhere(tmp_path: Path) -> None:
    base = SqliteStore(tmp_path / "state.sqlite")
    base.ban_ip("192.0.2.1", math.inf, "manual")
    base.list_add("whitelist", "friend@example.com", math.inf)
    key = ("192.0.2.0/24", "a@example.com", "b@example.org")
    base.greylist(key, T0, S)
    overlay = OverlayStore(base)
    assert overlay.path.endswith("(read only)")
    assert overlay.ip_banned("192.0.2.1", T0)
    overlay.ban_ip("192.0.2.2", T0 + 60, "demerits")
    overlay.ban_domain("*.bulk.test", T0 + 60, "spam")
    assert overlay.ip_banned("192.0.2.2", T0) and overlay.domain_banned("mx.bulk.test", T0)
    assert overlay.ban_in_force("domain", "mx.bulk.test", T0) == BanEntry(
        "domain", "*.bulk.test", T0 + 60, "spam")
    assert overlay.ban_in_force("ip", "192.0.2.1", T0) == BanEntry(
        "ip", "192.0.2.1", math.inf, "manual")  # the real store's
    assert overlay.listed("whitelist", "FRIEND@example.com", T0)
    overlay.list_remove("whitelist", "friend@example.com")
    assert not overlay.listed("whitelist", "friend@example.com", T0)
    base.list_add("whitelist", "example.net", math.inf)
    overlay.list_remove("whitelist", "someone@example.net")  # the domain entry still lists
    assert overlay.listed("whitelist", "someone@example.net", T0)
    overlay.list_remove("whitelist", "example.net")
    assert not overlay.listed("whitelist", "someone@example.net", T0)
    overlay.list_add("blacklist", "pest@example.com", T0 + 60)
    assert overlay.listed("blacklist", "pest@example.com", T0)
    # The greylist goes on from the stored record: the retry passes, here only.
    assert overlay.greylist(key, T0 + 300, S).passed
    assert overlay.greylist(key, T0 + 301, S).count == 2
    overlay.cache_put("cbv", "x", "ok", T0 + 60)
    assert overlay.cache_get("cbv", "x", T0) == "ok"
    assert overlay.reserve("connid", 10) == 1 and overlay.reserve("connid", 1) == 11
    assert overlay.purge(T0) == 0 and overlay.purge_greylist(T0, S) == 0
    # Nothing reached the real store.
    assert not base.ip_banned("192.0.2.2", T0) and not base.domain_banned("mx.bulk.test", T0)
    assert base.listed("whitelist", "friend@example.com", T0)
    assert not base.listed("blacklist", "pest@example.com", T0)
    assert [e.count for e in base.greylist_entries(GreylistMatch())] == [0]
    assert base.cache_get("cbv", "x", T0) is None
    overlay.close()
