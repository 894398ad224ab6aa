"""SRS forward/reverse, bounce validation and sender rewriting (bmslib.policy.srs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bmslib.policy.address import parse_address
from bmslib.policy.decision import CONTINUE, Action
from bmslib.policy.srs import SPOOFED_BOUNCE_TEXT, Srs, SrsSettings, validate

NOW = 1_700_000_000.0
DAY = 86400.0
FW = "fw.example.com"


def settings(**kw: object) -> SrsSettings:
    base: dict[str, object] = {
        "secret": "s3cret", "fwdomain": FW,
        "srs_domains": frozenset({FW, "example.com"}),
    }
    base.update(kw)
    return SrsSettings(**base)  # type: ignore[arg-type]


def srs_at(when: float, **kw: object) -> Srs:
    return Srs(settings(**kw), clock=lambda: when)


NULL = parse_address("<>")


# --- forward / reverse -------------------------------------------------------------------

def test_round_trip() -> None:
    srs = srs_at(NOW)
    fwd = srs.forward("Joe@Outside.Example")
    local, _, domain = fwd.partition("@")
    assert domain == FW
    assert local.startswith("SRS0=")
    assert srs.reverse(fwd) == "Joe@Outside.Example"


def test_case_smashed_by_remote_mta_still_reverses() -> None:
    srs = srs_at(NOW)
    fwd = srs.forward("joe@outside.example")
    assert srs.reverse(fwd.lower()) == "joe@outside.example"
    assert srs.reverse(fwd.upper()) is not None


def test_same_domain_is_not_rewritten() -> None:
    assert srs_at(NOW).forward(f"joe@{FW}") == f"joe@{FW}"


def test_bad_hash_and_wrong_secret() -> None:
    srs = srs_at(NOW)
    fwd = srs.forward("joe@outside.example")
    tag, hash_, rest = fwd.split("=", 2)
    forged = "AAAAAAAA" if hash_ != "AAAAAAAA" else "BBBBBBBB"
    assert srs.reverse(f"{tag}={forged}={rest}") is None
    assert srs.reverse(f"{tag}={hash_[:4]}={rest}") is None  # shorter than hashlength
    assert srs_at(NOW, secret="other").reverse(fwd) is None
    # A forged user part fails the hash too.
    assert srs.reverse(fwd.replace("=joe@", "=eve@")) is None


def test_expiry_with_injected_clock() -> None:
    fwd = srs_at(NOW).forward("joe@outside.example")
    assert srs_at(NOW + 8 * DAY).reverse(fwd) == "joe@outside.example"
    assert srs_at(NOW + 9 * DAY).reverse(fwd) is None
    assert srs_at(NOW + 30 * DAY, maxage=30).reverse(fwd) == "joe@outside.example"
    assert srs_at(NOW - 2 * DAY).reverse(fwd) is None  # from the future


def test_srs1() -> None:
    first = srs_at(NOW).forward("joe@outside.example")
    second_hop = srs_at(NOW, fwdomain="relay.example.org")
    srs1 = second_hop.forward(first)
    assert srs1.startswith("SRS1=")
    assert srs1.endswith("@relay.example.org")
    assert second_hop.reverse(srs1) == first  # back to the first forwarder
    assert srs_at(NOW).reverse(first) == "joe@outside.example"
    # An SRS1 hash forged or missing.
    tag, _hash, rest = srs1.split("=", 2)
    assert second_hop.reverse(f"{tag}=XXXXXXXX={rest}") is None
    assert second_hop.reverse("SRS1=outside.example=joe@relay.example.org") is None


def test_other_separator() -> None:
    srs = srs_at(NOW, separator="+")
    fwd = srs.forward("joe@outside.example")
    assert fwd.startswith("SRS0+")
    assert srs.reverse(fwd) == "joe@outside.example"
    srs1 = srs_at(NOW, separator="-", fwdomain="relay.example.org").forward(fwd)
    assert srs1.startswith("SRS1-")
    assert srs_at(NOW, fwdomain="relay.example.org").reverse(srs1) == fwd


def test_forgery_detected_without_asserts() -> None:
    """pysrs checks hashes with ``assert``; ``python -O`` must not let forgeries in."""
    code = (
        "from bmslib.policy.srs import Srs, SrsSettings\n"
        f"s = Srs(SrsSettings('k', fwdomain='{FW}'), clock=lambda: {NOW})\n"
        "a = s.forward('joe@outside.example')\n"
        "late = Srs(SrsSettings('k', fwdomain='{FW}'), clock=lambda: {NOW} + 30 * 86400)\n"
        "print(s.reverse(a), s.reverse(a.replace('=joe', '=eve')), late.reverse(a),"
        " s.reverse('SRS1=outside.example=joe@x.example'))\n"
    ).replace("{FW}", FW).replace("{NOW}", repr(NOW))
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2]).stdout.split()
    assert out == ["joe@outside.example", "None", "None", "None"]


@pytest.mark.parametrize("address", [
    "joe@outside.example", "SRS0=@fw.example.com", "SRS0=abc@fw.example.com",
    "SRS0=x=y@fw.example.com", "srs1=@fw.example.com", "SRS0=aaaaaaaa=G3=a=b",
    "", "SRS0=aaaaaaaa=!!=outside.example=joe@fw.example.com",
])
def test_reverse_rejects_non_srs_and_garbage(address: str) -> None:
    assert srs_at(NOW).reverse(address) is None


# --- bounce validation -------------------------------------------------------------------

def test_is_bounce() -> None:
    srs = srs_at(NOW, banned_users=frozenset({"mailer-daemon"}))
    assert srs.is_bounce(NULL)
    assert srs.is_bounce(parse_address("<MAILER-DAEMON@outside.example>"))
    assert not srs.is_bounce(parse_address("<joe@outside.example>"))


def test_bounce_to_valid_srs_is_reversed() -> None:
    srs = srs_at(NOW)
    fwd = srs.forward("joe@outside.example")
    verdict = srs.check_bounce_rcpt(NULL, parse_address(f"<{fwd}>"))
    assert verdict.reversed == "joe@outside.example"
    assert verdict.decision is CONTINUE


def test_bounce_to_forged_srs_is_rejected() -> None:
    srs = srs_at(NOW)
    fwd = srs.forward("joe@outside.example")
    verdict = srs.check_bounce_rcpt(NULL, parse_address(f"<{fwd.replace('=joe', '=eve')}>"))
    assert verdict.reversed is None
    d = verdict.decision
    assert (d.action, d.tag, d.code, d.xcode, d.lines, d.delay) == (
        Action.REJECT, "srs spoofed", "550", "5.7.1", ("Invalid SRS signature",), False)
    assert "bad hash" in d.log


def test_bounce_to_expired_srs_says_expired() -> None:
    fwd = srs_at(NOW).forward("joe@outside.example")
    d = srs_at(NOW + 20 * DAY).check_bounce_rcpt(NULL, parse_address(f"<{fwd}>")).decision
    assert d.action is Action.REJECT
    assert "expired" in d.log


def test_unsigned_bounce_without_reject_spoofed_continues() -> None:
    srs = srs_at(NOW)
    verdict = srs.check_bounce_rcpt(NULL, parse_address("<joe@example.com>"))
    assert verdict == type(verdict)(None, CONTINUE)


def test_unsigned_bounce_with_reject_spoofed_is_delayed_reject() -> None:
    srs = srs_at(NOW, reject_spoofed=True, banned_users=frozenset({"mailer-daemon"}))
    d = srs.check_bounce_rcpt(NULL, parse_address("<joe@example.com>")).decision
    assert (d.action, d.tag, d.lines, d.delay) == (
        Action.REJECT, "bounce with no SRS encoding", (SPOOFED_BOUNCE_TEXT,), True)
    d = srs.check_bounce_rcpt(parse_address("<Mailer-Daemon@outside.example>"),
                              parse_address("<joe@example.com>")).decision
    assert (d.action, d.tag, d.lines, d.delay) == (
        Action.REJECT, "bogus DSN", ("I do not accept normal mail from Mailer-Daemon.",), True)


def test_only_bounces_to_our_domains_are_checked() -> None:
    srs = srs_at(NOW, reject_spoofed=True)
    # Not our domain.
    assert srs.check_bounce_rcpt(NULL, parse_address("<joe@else.example>")).decision is CONTINUE
    assert srs.check_bounce_rcpt(
        NULL, parse_address("<SRS0=xxxxxxxx=G3=a.example=b@else.example>")).decision is CONTINUE
    # Not a bounce.
    joe = parse_address("<joe@outside.example>")
    assert srs.check_bounce_rcpt(joe, parse_address("<ann@example.com>")).decision is CONTINUE


# --- sender rewriting --------------------------------------------------------------------

INTERNAL = ["corp.example", "*.corp.example"]


def test_rewrite_outside_sender_to_outside_recipient() -> None:
    srs = srs_at(NOW)
    new = srs.rewrite_sender(parse_address("<joe@outside.example>"),
                             [parse_address("<ann@corp.example>"),
                              parse_address("<fwd@gmail.example>")], INTERNAL)
    assert new is not None and new.startswith("SRS0=") and new.endswith(f"@{FW}")
    assert srs.reverse(new) == "joe@outside.example"


def test_rewrite_quoted_local_part() -> None:
    srs = srs_at(NOW)
    new = srs.rewrite_sender(parse_address('<"john doe"@outside.example>'),
                             [parse_address("<x@gmail.example>")], INTERNAL)
    assert new is not None and new.startswith('"SRS0=') and new.endswith(f'john doe"@{FW}')
    assert srs.reverse(new) == '"john doe"@outside.example'
    # As the MTA hands the bounce back: unquoted by parse_address.
    verdict = srs.check_bounce_rcpt(NULL, parse_address(f"<{new}>"))
    assert verdict.reversed == "john doe@outside.example"


@pytest.mark.parametrize(("sender", "rcpts"), [
    ("<joe@corp.example>", ["<x@gmail.example>"]),  # local sender
    ("<joe@Mail.Corp.Example>", ["<x@gmail.example>"]),  # glob, case-insensitive
    ("<joe@example.com>", ["<x@gmail.example>"]),  # srs_domains sender
    ("<>", ["<x@gmail.example>"]),  # null sender
    ("<postmaster>", ["<x@gmail.example>"]),  # unqualified sender
    ("<joe@outside.example>", ["<ann@corp.example>", "<bob@a.corp.example>"]),
    ("<joe@outside.example>", ["<ann@example.com>", "<root>"]),
    ("<joe@outside.example>", []),
])
def test_no_rewrite(sender: str, rcpts: list[str]) -> None:
    assert srs_at(NOW).rewrite_sender(parse_address(sender),
                                      [parse_address(r) for r in rcpts], INTERNAL) is None


# --- settings ----------------------------------------------------------------------------

@pytest.mark.parametrize(("kw", "word"), [
    ({"secret": ""}, "secret"),
    ({"fwdomain": ""}, "fwdomain"),
    ({"separator": "!"}, "separator"),
    ({"maxage": 0}, "maxage"),
])
def test_validate(kw: dict[str, object], word: str) -> None:
    with pytest.raises(ValueError, match=word) as info:
        validate(settings(**kw))
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError):
        Srs(settings(**kw))


def test_validate_ok() -> None:
    validate(settings())
