"""The dynamic-PTR heuristic of bmslib.policy.dynip."""

from __future__ import annotations

import pytest

from bmslib.policy.dynip import is_dynamic

CASES = [
    # name, ip, dynamic
    ("", "192.0.2.1", True),
    ("[192.0.2.1]", "192.0.2.1", True),
    ("mail.example.com", "192.0.2.1", False),
    ("mx1.example.com", "192.0.2.1", False),
    ("example.com", "192.0.2.1", False),
    ("dyn-1-2-3-4.isp.example", "1.2.3.4", True),
    ("adsl123.isp.example", "198.51.100.7", True),
    ("ppp-5.isp.example", "198.51.100.7", True),
    ("dhcp.customer.isp.example", "198.51.100.7", True),
    ("c-198-51-100-7.hsd1.isp.example", "198.51.100.7", True),
    ("7.100.51.198.isp.example", "198.51.100.7", True),
    ("host-51-100-7.isp.example", "198.51.100.7", True),
    ("198051100007.isp.example", "198.51.100.7", True),
    ("pc6336407.isp.example", "198.51.100.7", True),  # hex c6336407
    ("mail-198-51-100-7.isp.example", "198.51.100.7", False),  # an outbound relay
    ("smtp2.isp.example", "198.51.100.7", False),
    ("webserver.example.com", "198.51.100.7", False),
    ("server1.hosting.example", "198.51.100.7", False),
    ("2001-db8--5.pool.isp.example", "2001:db8::5", True),
    ("2001-db8--5.isp.example", "2001:db8::5", True),
    ("host.ipv6.isp.example", "2001:db8::5", False),
    ("client.pass.test", "127.0.0.66", True),  # "client": a consumer word
    ("dyn-127-0-0-67.pool.isp.test", "127.0.0.67", True),
    ("mail.example.com.", "not an ip", False),
    ("1-2-3-4.isp.example", "not an ip", False),
    ("MAIL.EXAMPLE.COM", "::ffff:192.0.2.1", False),
    ("1-2-0-192.isp.example", "::ffff:192.0.2.1", True),
]


@pytest.mark.parametrize(("name", "ip", "dynamic"), CASES)
def test_is_dynamic(name: str, ip: str, dynamic: bool) -> None:
    assert is_dynamic(name, ip) is dynamic


@pytest.mark.parametrize("name", ["\x00\xff.example", "a" * 300, "." * 50, "-.-.-",
                                  "h\xe9llo.example"])
def test_hostile_names_do_not_crash(name: str) -> None:
    assert isinstance(is_dynamic(name, "192.0.2.1"), bool)
