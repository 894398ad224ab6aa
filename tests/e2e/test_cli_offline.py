"""``bms test MESSAGE.eml`` gives the verdict the daemon gives through real
Postfix (issue 16): the SPF scenarios of test_bms_policy.py (NSD, the CBV
sink) and the hostile-MIME corpus (tests/corpus.py), each run offline first
(it writes nothing, so the daemon then decides afresh) and then sent to a
running ``bms`` behind Postfix with the same configuration file.

Corpus cases bigger than Postfix's own limits (a 1 MiB header line, 10^5
headers, 20 MiB) are left out: Postfix, not bms, decides those."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from corpus import CASES as CORPUS
from corpus import CORPUS_SETTINGS, Case
from testbed import Postfix
from testbed.bmsd import BmsDaemon
from testbed.mail import new_message_id
from testbed.nsd import CLIENT_IP, CLIENT_PTR, SINK_IP, Nsd
from testbed.smtp import SmtpClient, Transaction
from testbed.smtpsink import SmtpSink

import bms
from e2e.test_bms_policy import ACCESS, CBV_TIMEOUT, RCPT, RECEIVER, policy_sections
from e2e.test_bms_policy import CASES as SPF_CASES

pytestmark = pytest.mark.e2e

EXIT_OF_CLASS = {"2": 0, "5": 1, "4": 2}  # bms test's exit status per SMTP reply class
SMALL_CORPUS = [c for c in CORPUS if len(c.build()) < 100_000]


def defang_section() -> dict[str, str]:
    def words(value: object) -> str:
        return ", ".join(value) if isinstance(value, tuple) else ("1" if value else "0")
    return {k: words(v) for k, v in CORPUS_SETTINGS.items()}


@pytest.fixture(scope="module")
def sink(nsd: Nsd) -> Iterator[SmtpSink]:
    with SmtpSink(SINK_IP, 25, name="mx.sink.test") as s:
        s.refuse("RCPT", "550 5.1.1 no such user here", rcpt="@cbv.softfail.test")
        s.delay("RCPT", CBV_TIMEOUT * 4, rcpt="@slow.neutral.test")
        yield s


@pytest.fixture(scope="module")
def daemon(nsd: Nsd, sink: SmtpSink) -> Iterator[BmsDaemon]:
    sections = {**policy_sections(nsd), "defang": defang_section()}
    with BmsDaemon(sections, ACCESS) as d:
        yield d


@pytest.fixture(scope="module")
def postfix(daemon: BmsDaemon) -> Iterator[Postfix]:
    with Postfix(milters=daemon.postfix_spec) as pf:
        yield pf


def offline(capsys: pytest.CaptureFixture[str], daemon: BmsDaemon, eml: Path,
            sender: str) -> tuple[int, str]:
    """``bms test`` in this process: exit status and what it printed."""
    code = bms.main(["-c", str(daemon.cfg), "test", str(eml), "--client", CLIENT_IP,
                     "--helo", CLIENT_PTR, "--from", sender, "--rcpt", RCPT,
                     "--mta-name", RECEIVER])
    out, err = capsys.readouterr()
    assert err == "", err
    return code, out


def through_postfix(postfix: Postfix, sender: str, data: bytes) -> Transaction:
    with SmtpClient("127.0.0.1", postfix.port, source_address=(CLIENT_IP, 0),
                    timeout=60) as client:
        code, text = client.ehlo(CLIENT_PTR)
        assert code == 250, (code, text)
        return client.transaction(sender, [RCPT], data)


def final_reply(t: Transaction) -> tuple[int, str]:
    """The reply that decided: the first refusal, else the end of DATA."""
    for reply in (t.mail, *t.rcpt.values(), t.data):
        if reply is not None and (reply.code >= 400 or reply is t.data):
            return reply.code, reply.text
    raise AssertionError(f"no decision in {t}")


STAGE_REPLY = re.compile(r"(?:connect|helo|mail from|rcpt to|data|end of headers|"
                         r"end of message)\b.*?: (?:REJECT|TEMPFAIL) (\d{3}[ -].*)")


def shown_reply(out: str) -> str:
    """The reply text ``bms test`` printed for the refusing stage (lines joined)."""
    for line in out.splitlines():
        m = STAGE_REPLY.fullmatch(line)
        if m:
            return " ".join(part[4:] for part in m.group(1).split(" / "))
    raise AssertionError(f"no refusing stage in {out}")


def same_verdict(code: int, out: str, t: Transaction) -> None:
    smtp_code, text = final_reply(t)
    assert code == EXIT_OF_CLASS[str(smtp_code)[0]], (code, smtp_code, text, out)
    if smtp_code >= 400:  # the reply bms test shows is the one Postfix sent
        assert shown_reply(out) == re.sub(r"\s+", " ", text), (text, out)


@pytest.mark.parametrize("name", list(SPF_CASES))
def test_spf_scenarios_same_verdict_offline_and_through_postfix(
        name: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, daemon: BmsDaemon,
        postfix: Postfix) -> None:
    case = SPF_CASES[name]
    sender = case.sender.replace("a@", "offline@").replace("refused@", "refused-offline@")
    mid = new_message_id(f"offline-{name}")
    data = (f"From: <{sender}>\r\nTo: <{RCPT}>\r\nSubject: offline {name}\r\n"
            f"Message-ID: {mid}\r\n\r\nHello.\r\n").encode()
    eml = tmp_path / "message.eml"
    eml.write_bytes(data)
    code, out = offline(capsys, daemon, eml, sender)
    assert f"mail from <{sender}>: " in out and out.rstrip().splitlines()[-1].startswith(
        "verdict: "), out
    same_verdict(code, out, through_postfix(postfix, sender, data))


@pytest.mark.parametrize("case", SMALL_CORPUS, ids=[c.name for c in SMALL_CORPUS])
def test_corpus_same_verdict_offline_and_through_postfix(
        case: Case, capsys: pytest.CaptureFixture[str], tmp_path: Path, daemon: BmsDaemon,
        postfix: Postfix) -> None:
    data = case.build()
    eml = tmp_path / "message.eml"
    eml.write_bytes(data)
    sender = "corpus@none.test"  # SPF none: a content reject bans no sender domain
    code, out = offline(capsys, daemon, eml, sender)
    verdict = case.verdict
    assert code == (1 if verdict.startswith("reject:") else 0), out
    if verdict == "defang":
        assert "edit: replace body" in out, out
    assert "BAN" not in out, out  # decided on content, not on an earlier case
    same_verdict(code, out, through_postfix(postfix, sender, data))


def test_bms_test_as_a_command(tmp_path: Path, daemon: BmsDaemon) -> None:
    """The installed entry point: ``python -m bms … test``, a reject (exit 1)
    with the log lines, each stage and the reply."""
    eml = tmp_path / "viagra.eml"
    eml.write_bytes(b"From: <x@none.test>\r\nTo: <rcpt@example.test>\r\n"
                    b"Subject: Cheap VIAGRA\r\n\r\nBuy.\r\n")
    done = subprocess.run(
        [sys.executable, "-m", "bms", "-c", str(daemon.cfg), "test", str(eml), "--client",
         CLIENT_IP, "--from", "x@none.test", "--rcpt", RCPT], capture_output=True, text=True,
        timeout=60, check=False)
    assert done.returncode == 1 and done.stderr == "", done
    lines = done.stdout.splitlines()
    assert f"connect {CLIENT_PTR} [{CLIENT_IP}]: CONTINUE" in lines, lines  # PTR from DNS
    assert f"helo {CLIENT_PTR}: CONTINUE" in lines, lines
    assert any(line.endswith("REJECT: Subject: Cheap VIAGRA") for line in lines), "\n".join(lines)
    assert lines[-3] == "end of headers: REJECT 550 5.7.1 That subject is not allowed.", lines
    assert lines[-2].endswith(f"close: session from {CLIENT_PTR} at {CLIENT_IP} ended"), lines
    assert lines[-1] == "verdict: reject (nothing was written: no --commit)", lines
