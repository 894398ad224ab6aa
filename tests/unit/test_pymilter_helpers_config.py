"""Milter.config (MilterConfigParser), Milter.policy (MTAPolicy) and
Milter.unsign."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from Milter.config import MilterConfigParser
from Milter.policy import MTAPolicy
from Milter.unsign import unsign


def _parser(tmp_path: Path, text: str, **defaults: object) -> MilterConfigParser:
    cfg = tmp_path / "milter.cfg"
    cfg.write_text(text)
    cp = MilterConfigParser(defaults)
    cp.read(str(cfg))
    return cp


def test_defaults_do_not_leak_into_sections(tmp_path: Path) -> None:
    cp = _parser(tmp_path, "[milter]\nsocket = inet:1234\n[spf]\nreject = fail\n",
                 socketname="/tmp/sock", timeout="600")
    assert cp.options("spf") == ["reject"]
    assert cp.get("milter", "socketname") == "/tmp/sock"
    assert cp.get("milter", "socket") == "inet:1234"
    assert cp.get("spf", "nothing") is None
    assert cp.getdefault("spf", "nothing", "x") == "x"
    assert cp.getintdefault("milter", "missing", 7) == 7


def test_lists_and_addresses(tmp_path: Path) -> None:
    (tmp_path / "example.org").write_text("carol dave\n")
    (tmp_path / "vips").write_text("eve@example.net\n")
    cp = _parser(tmp_path, "[m]\nhosts = a, b ,c\nusers = alice@Example.COM, bob@example.com,"
                 " file:example.org\nclasses = gold, silver\ngold = x@example.com, file:vips\n"
                 "silver = y@example.com\nport = 25\n")
    assert cp.getlist("m", "hosts") == ["a", "b", "c"]
    assert cp.getlist("m", "none") == []
    assert cp.getaddrset("m", "users", str(tmp_path)) == {
        "example.com": ["alice", "bob"], "example.org": ["carol", "dave"]}
    assert cp.getaddrdict("m", "classes", str(tmp_path)) == {
        "x@example.com": "gold", "eve@example.net": "gold", "y@example.com": "silver"}
    assert cp.getintdefault("m", "port") == 25


def test_bad_address_is_a_clear_error(tmp_path: Path) -> None:
    cp = _parser(tmp_path, "[m]\nusers = nobody\n")
    with pytest.raises(ValueError, match=r"\[m\] users: 'nobody' is not user@domain"):
        cp.getaddrset("m", "users")


def test_mtapolicy_reads_the_text_access_file(tmp_path: Path) -> None:
    access = tmp_path / "access"
    access.write_text("# comment\nSPF-Pass:example.com\tOK\nSPF-Neutral:example.com REJECT\n"
                      "SPF-Permerror:foo@bad.example.com\tOK\nSPF-Permerror:\tREJECT\n"
                      "SMTP-Test  TEMPFAIL\nspf-fail!Example.NET\tCBV\n")
    conf = SimpleNamespace(access_file=str(tmp_path / "access.db"), access_file_nulls=False)
    with MTAPolicy("joe@example.com", conf) as p:
        assert p.getPolicy("SPF-Pass") == "OK"
        assert p.getPolicy("spf-neutral") == "REJECT"
        assert p.getPolicy("SPF-Softfail") is None
        assert p.getPolicy("SMTP-Test") == "TEMPFAIL"
    with MTAPolicy("foo@bad.example.com", conf) as p:
        assert p.getPolicy("SPF-Permerror") == "OK"
    with MTAPolicy("bar@bad.example.com", conf) as p:
        assert p.getPolicy("SPF-Permerror") == "REJECT"
    with MTAPolicy("x@example.net", conf) as p:
        assert p.getPolicy("SPF-Fail") == "CBV"
    with MTAPolicy("x@example.net", SimpleNamespace(access_file=None)) as p:
        assert p.getPolicy("SPF-Fail") is None


def test_policy_parent_domains_with_a_leading_dot(tmp_path: Path) -> None:
    """pymilter's testpolicy (git, after 1.0.5): ``SMTP-Test:.baz.com``
    covers every domain below baz.com, not baz.com itself; the domain's own
    entry and the sender's come first, the bare prefix after."""
    (tmp_path / "access").write_text(
        "SMTP-Test:\tREJECT\nSMTP-Test:.baz.com\tWILDCARD\n"
        "SMTP-Test:mail.bar.baz.com\tOK\nSMTP-Test:.bar.baz.com\tNEAR\n")
    conf = SimpleNamespace(access_file=str(tmp_path / "access"))
    for sender, want in (("foo@bar.baz.com", "WILDCARD"), ("foo@x.bar.baz.com", "NEAR"),
                         ("foo@mail.bar.baz.com", "OK"), ("foo@baz.com", "REJECT"),
                         ("foo@random.com", "REJECT"), ("foo@localhost", "REJECT")):
        with MTAPolicy(sender, conf) as p:
            assert p.getPolicy("smtp-test") == want, sender


def test_unsign_leaves_malformed_addresses() -> None:
    assert unsign("SRS0=only-two=parts@example.com") == "SRS0=only-two=parts@example.com"
    assert unsign("SRS0=h=tt=example.org=user") == "SRS0=h=tt=example.org=user"
    assert unsign("SRS0=h=tt=example.org=a=b@fwd.example") == "a=b@example.org"
