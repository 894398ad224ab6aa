"""``internal_connect``, ``trusted_relay``, ``internal_mta``: typos are refused
at load with one line; host names are resolved at (re)load, with a warning for
the ones that do not resolve."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fakes import FakeResolver

import bms
from bmslib.config import ConfigError, load_config
from bmslib.policy.connection import IpList, parse_ip
from bmslib.runtime import build_runtime

from .spf_fakes import ZoneResolver

OPTIONS = ["internal_connect", "trusted_relay", "internal_mta"]
EXPECTED = ("expected a list of networks (192.168.0.0/16, 2001:db8::/32), addresses, "
            "globs (127.*) or host names")


def cfg_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bms.cfg"
    path.write_text(f"[milter]\ndatadir = {tmp_path}\n{text}[spf]\naccess_file =\n")
    return str(path)


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize(("item", "detail"), [
    ("192.168.0.0/33", " (a network's prefix length is at most 32 for IPv4, 128 for IPv6)"),
    ("2001:db8::/129", " (a network's prefix length is at most 32 for IPv4, 128 for IPv6)"),
    ("10.1.2.3.4", ""),
    ("10.1.2.300", ""),
    ("fe80::zz", ""),
    ("mx.example/abc", ""),
    ("mx.example/200", ""),
    ("under_score!.example", ""),
    ("10.*.x", ""),
])
def test_typos_are_refused_at_load(tmp_path: Path, option: str, item: str,
                                   detail: str) -> None:
    path = cfg_file(tmp_path, f"{option} = 192.168.0.0/16, {item}\n")
    with pytest.raises(ConfigError) as info:
        load_config([path])
    assert str(info.value) == f"{path}: [milter] {option}: {EXPECTED}{detail}, got {item!r}"


@pytest.mark.parametrize("value", ["192.168.0.0/16,127.*", "10.0.0.1 ::1 2001:db8::/32",
                                   "mx.example.com, office.example.com/24", "192.168.1.*"])
def test_good_lists_load(tmp_path: Path, value: str) -> None:
    cfg = load_config([cfg_file(tmp_path, f"internal_connect = {value}\n")])
    assert cfg.get("milter", "internal_connect") == tuple(
        w for w in value.replace(",", " ").split())


def test_names_are_resolved_once_and_missing_ones_warned() -> None:
    ips = IpList(["relay.example", "office.example/24", "gone.example", "broken.example"])
    resolver = FakeResolver({"relay.example": ["192.0.2.1"], "office.example": ["198.51.100.7"]},
                            frozenset({"broken.example"}))
    problems = ips.resolve(resolver)
    assert problems == [
        "host name gone.example does not resolve (no A/AAAA record); it matches no client "
        "until it does",
        "host name broken.example cannot be resolved now (broken.example); it is looked up again "
        "per connection"]
    resolver.asked.clear()
    assert ips.matches(parse_ip("192.0.2.1"))  # no resolver needed any more
    assert ips.matches(parse_ip("198.51.100.200"))
    assert not ips.matches(parse_ip("192.0.2.2"))
    assert not ips.matches(parse_ip("203.0.113.1"), resolver)
    assert resolver.asked == ["gone.example", "broken.example"]


def test_runtime_warns_for_names_that_do_not_resolve(tmp_path: Path) -> None:
    cfg = load_config([cfg_file(tmp_path, "internal_connect = 10.0.0.0/8, gone.example\n"
                                          "trusted_relay = mx2.example\n")])
    resolver = ZoneResolver({("mx2.example", "A"): ["192.0.2.25"]})
    runtime = build_runtime(cfg, resolver=resolver)
    assert runtime.warnings == (
        "[milter] internal_connect: host name gone.example does not resolve (no A/AAAA "
        "record); it matches no client until it does",)
    assert runtime.settings.connection.trusted_relay.matches(parse_ip("192.0.2.25"))


def test_reload_resolves_the_host_names_again(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    dns = "[dns]\nnameservers = 127.0.0.1:9\ntimeout = 0.2\nlifetime = 0.4\n"
    path = Path(cfg_file(tmp_path, "internal_connect = 10.0.0.0/8\n"))
    path.write_text(path.read_text() + dns)
    config = load_config([str(path)])
    daemon = bms.Daemon([str(path)], config, build_runtime(config))
    path.write_text(path.read_text().replace("10.0.0.0/8", "10.0.0.0/8, mx.gone.invalid"))
    assert daemon.reload()
    said = [m for m in caplog.messages if "mx.gone.invalid" in m]
    assert len(said) == 1 and said[0].startswith(
        "config: [milter] internal_connect: host name mx.gone.invalid "), said
    assert daemon.runtime.settings.connection.internal_connect.hosts == [
        ("mx.gone.invalid", None)]
