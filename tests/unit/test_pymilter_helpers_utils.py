"""Milter.utils and Milter.pyip6: pymilter's address helpers."""

from __future__ import annotations

import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from Milter import pyip6, utils


@pytest.mark.parametrize(("text", "ok4", "ok6"), [
    ("1.2.3.4", True, False),
    ("255.255.255.255", True, False),
    ("256.1.1.1", False, False),
    ("01.2.3.4", False, False),
    ("::", False, True),
    ("::ffff:1.2.3.4", False, True),
    ("2001:db8::1", False, True),
    ("1:2:3:4:5:6:7:8", False, True),
    ("1:2:3:4:5:6:7:8:9", False, False),
    ("1::2::3", False, False),
    ("example.com", False, False),
])
def test_address_patterns(text: str, ok4: bool, ok6: bool) -> None:
    assert bool(utils.ip4re.match(text)) is ok4
    assert bool(utils.ip6re.match(text)) is ok6


def test_iniplist_families_do_not_mix() -> None:
    assert not utils.iniplist("::1", ["0.0.0.1/32"])
    assert not utils.iniplist("0.0.0.1", ["::1"])
    assert utils.iniplist("2001:db8::5", ["2001:db8::/32"])
    assert not utils.iniplist("2001:db9::5", ["2001:db8::/32"])


def test_iniplist_host_name_entry_resolves_locally() -> None:
    assert utils.iniplist("127.0.0.1", ["localhost"])
    assert not utils.iniplist("10.9.9.9", ["localhost/32"])
    # An unresolvable name matches nothing (no exception).
    assert not utils.iniplist("10.9.9.9", ["no-such-host.invalid"])


def test_addr2bin_rejects_garbage() -> None:
    for bad in ("1.2.3", "x", "1.2.3.4.5", "::g"):
        with pytest.raises(OSError):
            utils.addr2bin(bad)


def test_cidr() -> None:
    assert utils.cidr(0xFFFFFFFF, 8) == 0xFF000000
    assert utils.cidr(0xFFFFFFFF, 0) == 0
    assert utils.cidr(utils.MASK6, 64, utils.MASK6) == utils.MASK6 ^ ((1 << 64) - 1)


@pytest.mark.parametrize(("value", "decoded"), [
    ("=?UTF-8?B?SGVsbG8gd29ybGQ?=", "Hello world"),
    ("=?utf-8?q?caf=C3=A9?= au lait", "café au lait"),
    ("=?bogus-charset?Q?abc?=", "abc"),
    ("=?utf-8?Q?a=FFb?=", "a\ufffdb"),
    ("no encoding at all", "no encoding at all"),
])
def test_parse_header(value: str, decoded: str) -> None:
    assert utils.parse_header(value) == decoded


@given(st.text(max_size=80))
def test_parse_header_never_raises(value: str) -> None:
    assert isinstance(utils.parse_header(value), str)


@given(st.text(max_size=80))
def test_address_splitters_never_raise(value: str) -> None:
    assert isinstance(utils.parse_addr(value), list)
    name, addr = utils.parseaddr(value)
    assert isinstance(name, str) and isinstance(addr, str)


@given(st.binary(min_size=16, max_size=16))
def test_pyip6_round_trip(packed: bytes) -> None:
    text = pyip6.inet_ntop(packed)
    assert pyip6.inet_pton(text) == packed
    assert socket.inet_pton(socket.AF_INET6, text) == packed


@pytest.mark.parametrize("bad", [":::", "1::2::3", "12345::", "1:2:3:4:5:6:7", "::1.2.3",
                                 "1:2:3:4:5:6:7:1.2.3.4", "", "x"])
def test_pyip6_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="^" + bad.replace(".", r"\.") + "$"):
        pyip6.inet_pton(bad)
