"""DKIM sign/verify and Authentication-Results items (bmslib.policy.dkim)."""

from __future__ import annotations

import base64
import hashlib
import shutil
from collections.abc import Callable

import dkim
import pytest
from dkim.canonicalization import CanonicalizationPolicy
from dkim.crypto import parse_pem_private_key
from dkimkeys import keypair

from bmslib.interfaces import DnsTempError
from bmslib.policy.dkim import (
    DkimError,
    DkimResult,
    DkimSettings,
    authres_items,
    sign,
    verify_all,
)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")

MESSAGE = (
    b"From: Joe <joe@example.com>\r\n"
    b"To: ann@outside.example\r\n"
    b"Subject: quarterly report\r\n"
    b"Date: Tue, 24 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"Received: from somewhere\r\n"
    b"\r\n"
    b"Hello Ann,\r\n\r\nthe numbers are attached.\r\n"
)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, bytes]]:
    tmp = tmp_path_factory.mktemp("dkimkeys")
    return {"a": keypair(tmp, "a"), "b": keypair(tmp, "b")}


def resolver(records: dict[str, list[bytes]]) -> Callable[[str], list[bytes]]:
    def txt(name: str) -> list[bytes]:
        assert not name.endswith(".")
        return records.get(name.lower(), [])
    return txt


def signed(message: bytes, key: bytes, domain: str = "example.com",
           selector: str = "sel") -> bytes:
    value = sign(message, DkimSettings(key, domain, selector))
    return b"DKIM-Signature: " + value.replace("\n", "\r\n").encode() + b"\r\n" + message


def signed_without_identity(message: bytes, key: bytes, domain: bytes,
                            selector: bytes) -> bytes:
    """A valid signature with no ``i=`` tag (dkimpy's sign() always adds one)."""
    d = dkim.DKIM(message)
    canon = CanonicalizationPolicy.from_c_value(b"relaxed/simple")
    include = tuple(x.lower() for x in d.default_sign_headers())
    d.hasher = hashlib.sha256
    bh = base64.b64encode(hashlib.sha256(canon.canonicalize_body(d.body)).digest())
    fields = [(b"v", b"1"), (b"a", b"rsa-sha256"), (b"c", b"relaxed/simple"),
              (b"d", domain), (b"q", b"dns/txt"), (b"s", selector),
              (b"h", b" : ".join(include)), (b"bh", bh), (b"b", b"0" * 60)]
    value: bytes = d.gen_header(fields, include, canon, b"DKIM-Signature",
                                parse_pem_private_key(key))
    return b"DKIM-Signature: " + value + message


# --- signing -----------------------------------------------------------------------------

def test_sign_value(keys: dict[str, tuple[bytes, bytes]]) -> None:
    value = sign(MESSAGE, DkimSettings(keys["a"][0], "example.com", "sel"))
    assert not value.lower().startswith("dkim-signature")
    assert "\r" not in value and not value.endswith("\n")
    flat = " ".join(value.split())
    for tag in ("v=1", "a=rsa-sha256", "c=relaxed/simple", "d=example.com", "s=sel",
                "i=@example.com"):
        assert tag in flat
    signed_headers = flat.split("h=")[1].split(";")[0].replace(" ", "").split(":")
    assert {"from", "to", "subject", "date", "message-id", "mime-version",
            "content-type"} <= set(signed_headers)
    assert "received" not in signed_headers


@pytest.mark.parametrize("settings", [
    DkimSettings(None, "example.com"), DkimSettings(b"", "example.com"),
    DkimSettings(b"-----BEGIN RSA PRIVATE KEY-----\nxx\n-----END", ""),
])
def test_sign_needs_key_and_domain(settings: DkimSettings) -> None:
    with pytest.raises(DkimError, match="privkey and domain"):
        sign(MESSAGE, settings)


def test_sign_errors_are_dkim_errors(keys: dict[str, tuple[bytes, bytes]]) -> None:
    with pytest.raises(DkimError, match="failed"):
        sign(MESSAGE, DkimSettings(b"not a key", "example.com"))
    with pytest.raises(DkimError, match="failed"):
        sign(b"Subject: no from\r\n\r\nbody\r\n", DkimSettings(keys["a"][0], "example.com"))


# --- verification ------------------------------------------------------------------------

def test_verify_pass(keys: dict[str, tuple[bytes, bytes]]) -> None:
    msg = signed(MESSAGE, keys["a"][0])
    results = verify_all(msg, resolver({"sel._domainkey.example.com": [b"other", keys["a"][1]]}))
    assert results == (DkimResult("pass", "example.com", "sel", "@example.com", 1024, ""),)


def test_no_signature() -> None:
    assert verify_all(MESSAGE, resolver({})) == ()
    assert authres_items(()) == ["dkim=none"]


def test_altered_body_and_header_fail(keys: dict[str, tuple[bytes, bytes]]) -> None:
    txt = resolver({"sel._domainkey.example.com": [keys["a"][1]]})
    msg = signed(MESSAGE, keys["a"][0])
    (r,) = verify_all(msg.replace(b"numbers", b"NUMBERS"), txt)
    assert (r.result, r.domain, r.bits) == ("fail", "example.com", 1024)
    assert "body hash" in r.reason
    (r,) = verify_all(msg.replace(b"quarterly", b"annual"), txt)
    assert (r.result, r.reason) == ("fail", "signature did not verify")


def test_two_signatures_one_good_one_bad(keys: dict[str, tuple[bytes, bytes]]) -> None:
    txt = resolver({"sel._domainkey.example.com": [keys["a"][1]],
                    "s2._domainkey.relay.example": [keys["a"][1]]})  # not key b
    msg = signed(signed(MESSAGE, keys["a"][0]), keys["b"][0], "relay.example", "s2")
    results = verify_all(msg, txt)
    assert [(r.result, r.domain, r.selector) for r in results] == [
        ("fail", "relay.example", "s2"), ("pass", "example.com", "sel")]
    assert authres_items(results) == [
        'dkim=fail reason="signature did not verify" header.d=relay.example header.s=s2'
        " header.i=@relay.example",
        "dkim=pass header.d=example.com header.s=sel header.i=@example.com",
    ]


def test_signature_without_identity(keys: dict[str, tuple[bytes, bytes]]) -> None:
    msg = signed_without_identity(MESSAGE, keys["a"][0], b"example.com", b"sel")
    (r,) = verify_all(msg, resolver({"sel._domainkey.example.com": [keys["a"][1]]}))
    assert (r.result, r.identity) == ("pass", None)
    assert authres_items([r]) == ["dkim=pass header.d=example.com header.s=sel"]


def test_temperror(keys: dict[str, tuple[bytes, bytes]]) -> None:
    def txt(name: str) -> list[bytes]:
        raise DnsTempError("SERVFAIL")
    (r,) = verify_all(signed(MESSAGE, keys["a"][0]), txt)
    assert (r.result, r.domain, r.selector) == ("temperror", "example.com", "sel")
    assert "SERVFAIL" in r.reason


def test_permerror_no_or_bad_key(keys: dict[str, tuple[bytes, bytes]]) -> None:
    msg = signed(MESSAGE, keys["a"][0])
    (r,) = verify_all(msg, resolver({}))
    assert (r.result, r.reason, r.bits) == ("permerror", "no key record", 0)
    (r,) = verify_all(msg, resolver({"sel._domainkey.example.com": [b"v=DKIM1; k=rsa; p=!!"]}))
    assert r.result == "permerror"


def test_short_key_is_policy(keys: dict[str, tuple[bytes, bytes]]) -> None:
    msg = signed(MESSAGE, keys["a"][0])
    (r,) = verify_all(msg, resolver({"sel._domainkey.example.com": [keys["a"][1]]}),
                      min_key_bits=2048)
    assert (r.result, r.bits) == ("policy", 1024)


@pytest.mark.parametrize("header", [
    b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com\r\n",  # missing tags
    b"DKIM-Signature: garbage without tags\r\n",
    b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=example.com; s=sel;"
    b" h=from; bh=!!!; b=!!!\r\n",
])
def test_malformed_signature_is_permerror(header: bytes,
                                          keys: dict[str, tuple[bytes, bytes]]) -> None:
    (r,) = verify_all(header + MESSAGE,
                      resolver({"sel._domainkey.example.com": [keys["a"][1]]}))
    assert r.result == "permerror"
    assert r.reason and "\n" not in r.reason


def test_unparsable_message() -> None:
    assert verify_all(b"garbage", resolver({})) == ()
    assert verify_all(b"", resolver({})) == ()
    (r,) = verify_all(b"garbage\r\nDKIM-Signature: v=1\r\n\r\nbody", resolver({}))
    assert r.result == "permerror"


def test_authres_values_are_header_safe() -> None:
    r = DkimResult("fail", "exa mple.com", "s;el", "joe\r\n@x", 0, 'bad "key"\x01')
    (item,) = authres_items([r])
    assert "\r" not in item and "\n" not in item and "\x01" not in item
    assert item == ('dkim=fail reason="bad \\"key\\"\\\\x01" header.d="exa mple.com"'
                    ' header.s="s;el" header.i="joe\\\\r\\\\n@x"')
