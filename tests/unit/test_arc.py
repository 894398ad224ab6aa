"""ARC with dkimpy: verifying chains made by the test (pass, tampered,
broken DNS), our seal (verified by dkimpy), the trusted-sealer rescue of a
DMARC failure, and the arc= item of Authentication-Results."""

from __future__ import annotations

import logging
import socket

import dkim
import pytest
from dkimkeys import keypair
from fakes import FakeAccess, FakeClock, FakeStore

from bmslib.interfaces import DnsTempError
from bmslib.policy.arc import ArcError, ArcResult, ArcSettings, seal, verify
from bmslib.policy.connection import ConnectionSettings, IpList
from bmslib.policy.decision import CONTINUE, Action, Decision
from bmslib.policy.dmarc import DmarcCheck
from bmslib.policy.edits import EomResult, apply_edits
from bmslib.policy.pipeline import PolicySettings, Services, SmtpSession, SpfResult

SELECTOR = "arc1"
MESSAGE = (b"From: Someone <someone@reject.example>\r\nTo: bob@example.com\r\n"
           b"Subject: forwarded\r\nMessage-ID: <1@reject.example>\r\n\r\nHello.\r\n")


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    return keypair(tmp_path_factory.mktemp("arc"), "arc")


class Dns:
    def __init__(self, key_record: bytes, broken: bool = False) -> None:
        self.key_record, self.broken = key_record, broken

    def txt(self, name: str) -> list[bytes]:
        if self.broken:
            raise DnsTempError(name)
        if name.endswith("._domainkey.fwd.example") or name.endswith("._domainkey.mx.example"):
            return [self.key_record]
        if name == "_dmarc.reject.example":
            return [b"v=DMARC1; p=reject"]
        return []

    def addresses(self, name: str) -> list[str]:
        return []

    def mx(self, domain: str) -> list[tuple[int, str]]:
        return []

    def ptr(self, ip: str) -> list[str]:
        return []


def forwarded(pem: bytes, message: bytes = MESSAGE) -> bytes:
    """``message`` as fwd.example passes it on: its A-R and its ARC set."""
    with_ar = b"Authentication-Results: fwd.example; arc=none; spf=pass " \
              b"smtp.mailfrom=someone@reject.example\r\n" + message
    return b"".join(dkim.arc_sign(with_ar, SELECTOR.encode(), b"fwd.example", pem,
                                  b"fwd.example")) + with_ar


def test_verify_pass_tampered_none_and_dns_errors(key: tuple[bytes, bytes]) -> None:
    pem, record = key
    msg = forwarded(pem)
    r = verify(msg, Dns(record).txt)
    assert (r.result, r.sealer, r.instances) == ("pass", "fwd.example", 1)
    assert r.authres() == "arc=pass (i=1 d=fwd.example)"
    bad = verify(msg.replace(b"Hello.", b"Hellp."), Dns(record).txt)
    assert bad.result == "fail" and bad.reason
    assert bad.authres().startswith('arc=fail reason="')
    assert verify(MESSAGE, Dns(record).txt).result == "none"
    assert verify(msg, Dns(record, broken=True).txt).result in ("temperror", "fail")
    assert verify(b"ARC-Seal: i=1; \x00\xff\r\n\r\n", Dns(record).txt).result == "fail"


def test_our_seal_verifies_with_dkimpy(key: tuple[bytes, bytes]) -> None:
    pem, record = key
    settings = ArcSettings(pem, "mx.example", SELECTOR)
    msg = b"Authentication-Results: mx.example.com; arc=pass; spf=pass\r\n" + forwarded(pem)
    fields = seal(msg, settings, "mx.example.com")
    assert [n for n, _ in fields] == ["ARC-Seal", "ARC-Message-Signature",
                                      "ARC-Authentication-Results"]
    sealed = b"".join(f"{n}: {v}\r\n".replace("\n", "\r\n").replace("\r\r", "\r").encode()
                      for n, v in fields) + msg
    cv, results, _ = dkim.arc_verify(sealed, dnsfunc=lambda n, timeout=5: record)
    assert cv == dkim.CV_Pass and len(results) == 2
    with pytest.raises(ArcError):
        seal(MESSAGE, settings, "mx.example.com")  # no A-R of ours
    with pytest.raises(ArcError):
        seal(msg, ArcSettings(b"not a key", "mx.example"), "mx.example.com")


def run(key: tuple[bytes, bytes], message: bytes, trusted: frozenset[str],
        arc: ArcSettings | None = None, spf: SpfResult | None = None,
        data: list[Decision] | None = None) -> EomResult:
    spf_result = spf or SpfResult(CONTINUE, result="pass")
    dns = Dns(key[1])
    settings = PolicySettings(connection=ConnectionSettings(internal_connect=IpList(
        ["10.0.0.0/8"])), trusted_arc_sealers=trusted, arc=arc)
    s = SmtpSession(settings, Services(
        FakeAccess({}), FakeStore(), FakeClock(), resolver=dns,
        spf=lambda conn, helo, sender: spf_result, dmarc=DmarcCheck(dns)))
    s.connect("lists.fwd.example", socket.AF_INET, ("198.51.100.9", 4000),
              lambda n: "mx.example.com" if n == "j" else None)
    s.helo("lists.fwd.example")
    s.mail("<bounces@fwd.example>", [], lambda n: None)
    s.rcpt("<bob@example.com>", [])
    (data if data is not None else []).append(s.data())
    head, _, body = message.partition(b"\r\n\r\n")
    for line in head.decode().replace("\r\n ", " ").replace("\r\n\t", "\t").split("\r\n"):
        name, _, value = line.partition(":")
        s.header(name, value.lstrip(" "))
    s.eoh()
    s.body(body)
    return s.eom(lambda n: None)


def authres(result: EomResult) -> str:
    return next(e.value for e in result.edits if e.name == "Authentication-Results")


def test_trusted_sealer_rescues_a_dmarc_failure(key: tuple[bytes, bytes],
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    msg = forwarded(key[0])
    refused = run(key, msg, frozenset())
    assert refused.decision.action is Action.REJECT
    rescued = run(key, msg, frozenset({"fwd.example"}))
    assert not rescued.decision.final
    ar = authres(rescued)
    assert "arc=pass (i=1 d=fwd.example)" in ar and "dmarc=fail" in ar
    assert any(m.endswith("(forwarded: ARC pass sealed by trusted fwd.example)")
               for m in caplog.messages)
    tampered = run(key, msg.replace(b"Hello.", b"Hellp."), frozenset({"fwd.example"}))
    assert tampered.decision.action is Action.REJECT


def test_pipeline_seals_with_our_authentication_results(key: tuple[bytes, bytes]) -> None:
    settings = ArcSettings(key[0], "mx.example", SELECTOR)
    msg = forwarded(key[0])  # once: a second one could carry another t=
    result = run(key, msg, frozenset({"fwd.example"}), settings)
    # the message as delivered: the edits applied to what bms saw
    head, _, body = msg.partition(b"\r\n\r\n")
    headers = [(n, v.lstrip(" ")) for n, _, v in (
        line.partition(":") for line in head.decode().replace("\r\n ", " ").split("\r\n"))]
    out = apply_edits(headers, result.edits)
    assert [n for n, _ in out[:4]] == ["ARC-Seal", "ARC-Message-Signature",
                                       "ARC-Authentication-Results", "Authentication-Results"]
    sealed = b"".join(f"{n}: {v}\r\n".replace("\n", "\r\n").replace("\r\r", "\r").encode()
                      for n, v in out) + b"\r\n" + body
    cv, results, why = dkim.arc_verify(sealed, dnsfunc=lambda n, timeout=5: key[1])
    assert cv == dkim.CV_Pass, why
    assert len(results) == 2 and results[0]["as-domain"] == b"mx.example"


def test_arc_result_items() -> None:
    assert ArcResult("none").authres() == "arc=none"
    assert ArcResult("temperror").authres() == "arc=temperror"
    assert ArcResult("fail", reason='a "quoted"\r\n').authres() == \
        'arc=fail reason="a \\"quoted\\"\\\\r\\\\n"'




SPF_FAIL = SpfResult(Decision.reject("SPF fail", "SPF fail: not allowed", delay=True,
                                     log="SPF fail 550 bounces@fwd.example"), result="fail")


def test_trusted_sealer_rescues_an_spf_failure_answered_at_end_of_message(
        key: tuple[bytes, bytes], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "bms")
    msg = forwarded(key[0], MESSAGE.replace(b"reject.example", b"nodmarc.example"))
    data: list[Decision] = []
    rescued = run(key, msg, frozenset({"fwd.example"}), spf=SPF_FAIL, data=data)
    assert not data[0].final  # DATA waits for the ARC chain
    assert not rescued.decision.final
    assert "SPF fail: let through: forwarded, ARC pass sealed by trusted fwd.example" \
        in caplog.messages
    data.clear()
    refused = run(key, msg.replace(b"Hello.", b"Hellp."), frozenset({"fwd.example"}),
                  spf=SPF_FAIL, data=data)
    assert not data[0].final and refused.decision.tag == "SPF fail"
    assert refused.decision.action is Action.REJECT
    data.clear()
    run(key, msg, frozenset(), spf=SPF_FAIL, data=data)
    assert data[0].action is Action.REJECT  # no trusted sealers: refused at DATA as before
