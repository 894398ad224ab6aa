"""pymilter's ``Milter.dynip``: does a PTR name look like a dynamic
(consumer, pool) address?  ``is_dynip(host, addr)`` is pymilter's name;
``is_dynamic(name, ip)`` is the same test (bms's DYN connection class, SPEC
§4, uses it for the "3 strikes" rule and the best-guess record without
``ptr``).  The heuristic is our own:

A name counts as dynamic when, in its *host part* (every label but the last
two, which are taken as the provider's domain):

1. a word says so: a token that starts with ``dyn``, ``dhcp``, ``dsl``,
   ``adsl``, ``vdsl``, ``xdsl``, ``ppp``, ``dial``, ``pool``, ``cable``,
   ``broadband``, ``cust``, ``client``, ``subscriber``, ``resid``, or is one
   of ``dip``, ``res``, ``cpe``, ``user``, ``users``, ``home``, ``modem``,
   ``bb``, ``nat``, ``wifi``, ``wlan``, ``mobile``, ``gprs``, ``lte``,
   ``3g``, ``4g``, ``5g`` (tokens are split at punctuation and at
   letter/digit boundaries: ``adsl123`` is ``adsl`` + ``123``); or
2. the address is written into it:

   * IPv4 ``a.b.c.d``: the four octets in order or reversed as consecutive
     numbers (``1-2-3-4``, ``ip-4.3.2.1``, zero-padded ``001-002-003-004``),
     the last three octets reversed or in order (``host-2-3-4``), twelve
     digits of zero-padded octets, or the eight hex digits of the address
     (``pd9e01020``-style names carry it after a letter prefix);
   * IPv6: a label that reads as the address with ``-`` for ``:``
     (``2001-db8--5``), four or more consecutive 16-bit groups with at least
     two of them non-zero, or the 32 nibbles (forward or reversed);

unless the first label is a mail server's (``mail``, ``mx``, ``smtp``,
``relay``, ``mta``, ``out``, ``outbound``, ``mailout``, ``smtpout``,
optionally numbered) and no word of rule 1 is present: providers name
their outbound relays after their addresses too.

No PTR (an empty name, or sendmail's ``[1.2.3.4]`` placeholder) counts as
dynamic.  Names of one or two labels have no host part and never match
rule 1.
"""

from __future__ import annotations

import ipaddress
import re

_PREFIX_WORDS = ("dyn", "dhcp", "dsl", "adsl", "vdsl", "xdsl", "ppp", "dial", "pool",
                 "cable", "broadband", "cust", "client", "subscriber", "resid")
_EXACT_WORDS = frozenset({"dip", "res", "cpe", "user", "users", "home", "modem", "bb", "nat",
                          "wifi", "wlan", "mobile", "gprs", "lte", "3g", "4g", "5g"})
_MAIL_WORDS = frozenset({"mail", "mx", "smtp", "relay", "mta", "out", "outbound", "mailout",
                         "smtpout"})

_PUNCT = re.compile(r"[^a-z0-9]+")
_PIECES = re.compile(r"[a-z]+|[0-9]+")
_HEX = re.compile(r"[0-9a-f]+")


def _tokens(labels: list[str]) -> list[str]:
    out: list[str] = []
    for label in labels:
        for part in _PUNCT.split(label):
            out.extend(_PIECES.findall(part))
    return out


def _has_word(tokens: list[str]) -> bool:
    for i, t in enumerate(tokens):
        if t in _EXACT_WORDS or t.startswith(_PREFIX_WORDS):
            return True
        # "3g"/"4g": a digit run followed by "g"
        if t == "g" and i > 0 and tokens[i - 1] in ("3", "4", "5"):
            return True
    return False


def _contains_run(haystack: list[int], needle: list[int]) -> bool:
    n = len(needle)
    return any(haystack[i:i + n] == needle for i in range(len(haystack) - n + 1))


def _v4_in_name(ip: ipaddress.IPv4Address, labels: list[str]) -> bool:
    octets = list(ip.packed)
    numbers: list[int] = []
    for label in labels:
        # Numbers only from punctuation-separated runs, so "ip68" gives 68.
        numbers.extend(int(n) for n in re.findall(r"[0-9]+", label) if len(n) <= 3)
    for seq in (octets, octets[::-1]):
        if _contains_run(numbers, seq):
            return True
    if _contains_run(numbers, octets[1:]) or _contains_run(numbers, octets[:0:-1]):
        return True
    text = "".join(labels)
    padded = "".join(f"{o:03d}" for o in octets)
    if padded in re.sub(r"[^0-9]", "", text) and padded in text.replace("-", "").replace(".", ""):
        return True
    hexform = ip.packed.hex()
    return any(hexform in h for label in labels for h in _HEX.findall(label))


def _v6_in_name(ip: ipaddress.IPv6Address, labels: list[str]) -> bool:
    for label in labels:
        try:
            if ipaddress.IPv6Address(label.replace("-", ":")) == ip:
                return True
        except ValueError:
            pass
    groups = [int.from_bytes(ip.packed[i:i + 2], "big") for i in range(0, 16, 2)]
    tokens = [t for label in labels for t in _PUNCT.split(label) if t]
    values: list[int | None] = [int(t, 16) if re.fullmatch(r"[0-9a-f]{1,4}", t) else None
                                for t in tokens]
    for start in range(len(values)):
        for length in range(4, 9):
            run = values[start:start + length]
            if len(run) < length or any(v is None for v in run):
                break
            ints = [v for v in run if v is not None]
            if sum(1 for v in ints if v) >= 2 and _contains_run(groups, ints):
                return True
    nibbles = ip.packed.hex()
    joined = "".join(re.findall(r"[0-9a-f]", "".join(labels)))
    return nibbles in joined or nibbles[::-1] in joined


def is_dynamic(name: str, ip: str) -> bool:
    """True when ``name`` (the PTR of ``ip``) is missing or looks dynamic.

    ``ip`` that is not an address disables rule 2 only."""
    n = name.strip().lower().rstrip(".")
    if not n or n.startswith("["):
        return True
    labels = [label for label in n.split(".") if label]
    host = labels[:-2]
    word = _has_word(_tokens(host))
    if word:
        return True
    first = _PIECES.findall(labels[0])
    if first and first[0] in _MAIL_WORDS:
        return False  # (whatever ``ip`` is: no need to parse it)
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        addr = ipaddress.ip_address(ip.strip().removeprefix("IPv6:").strip("[]"))
    except ValueError:
        addr = None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr is None:
        return False
    # The address may also be spelt across the provider part ("1-2-3-4.isp.example"
    # has only two labels after it), so rule 2 looks at every label but the TLD.
    scope = labels[:-1] if len(labels) > 1 else labels
    if isinstance(addr, ipaddress.IPv4Address):
        return _v4_in_name(addr, scope)
    return _v6_in_name(addr, scope)


def is_dynip(host: str, addr: str) -> bool:
    """pymilter's name for :func:`is_dynamic`: True if ``host``, the PTR
    name of ``addr``, is missing or looks like a dynamic address.

    >>> is_dynip('post3.fabulousdealz.com', '69.60.99.112')
    False
    >>> is_dynip('adsl-69-208-201-177.dsl.emhril.ameritech.net', '69.208.201.177')
    True
    >>> is_dynip('[1.2.3.4]', '1.2.3.4')
    True
    >>> is_dynip('c-71-63-151-151.hsd1.mn.comcast.net', '71.63.151.151')
    True
    >>> is_dynip('mail.example.com', '2001:db8::25')
    False
    """
    return is_dynamic(host, addr)
