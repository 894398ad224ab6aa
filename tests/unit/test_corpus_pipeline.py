"""Every corpus message (tests/corpus.py) through the whole policy pipeline as
outside mail, with the corpus configuration built by the daemon's own
``runtime.message_settings``: the verdict is the expected one, the body as it
would be delivered has and lacks the expected bytes, a defanged original is
saved (mode 0600) and the archive holds what is delivered — and nothing ends
in a TEMPFAIL or an exception (SPEC §9)."""

from __future__ import annotations

import io
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import pytest
from corpus import CASES, CORPUS_SETTINGS, Case, split_message
from fakes import FakeAccess, FakeClock, FakeStore

from bmslib.config import load_config
from bmslib.policy.decision import Action, Decision
from bmslib.policy.pipeline import PolicySettings, Services, SmtpSession
from bmslib.runtime import message_settings
from bmslib.spool import save_original

CHUNK = 65535  # the MTA's largest body chunk


class ListArchive:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def append(self, sender: str, headers: Sequence[tuple[str, str]], body: IO[bytes],
               when: float) -> str:
        body.seek(0)
        self.bodies.append(body.read())
        return "list"


def corpus_config(tmp_path: Path) -> Path:
    def words(value: object) -> str:
        return ", ".join(value) if isinstance(value, tuple) else ("1" if value else "0")

    defang = "\n".join(f"{k} = {words(v)}" for k, v in CORPUS_SETTINGS.items())
    cfg = tmp_path / "corpus.cfg"
    cfg.write_text(f"[milter]\ntempdir = {tmp_path}\n[defang]\n{defang}\n")
    return cfg


def macros(**values: str) -> Any:
    table = {"j": "mx.example.com", **values}
    return lambda name: table.get(name)


def run(case: Case, tmp_path: Path) -> tuple[Decision, bytes | None, ListArchive]:
    config = load_config([str(corpus_config(tmp_path))])
    archive = ListArchive()
    s = SmtpSession(PolicySettings(message=message_settings(config)), Services(
        FakeAccess({}), FakeStore(), FakeClock(), archive=archive,
        save=lambda spool: save_original(spool, str(tmp_path))))
    headers, body = split_message(case.build())
    s.connect("mail.b.example", socket.AF_INET, ("198.51.100.9", 4000), macros())
    s.helo("mail.b.example")
    s.mail("<someone@b.example>", [], macros())
    s.rcpt("<bob@example.com>", [])
    assert not s.data().final
    for name, value in headers:
        s.header(name, value)
    d = s.eoh()
    if d.final:
        s.close()
        return d, None, archive
    stream = io.BytesIO(body)
    while chunk := stream.read(CHUNK):
        s.body(chunk)
    result = s.eom(macros(i="QID"))
    new: bytes | None = None
    if result.body is not None:
        result.body.seek(0)
        new = result.body.read()
        result.body.close()
    s.close()
    return result.decision, new, archive


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_verdict_through_the_pipeline(case: Case, tmp_path: Path) -> None:
    decision, new, archive = run(case, tmp_path)
    assert decision.action is not Action.TEMPFAIL, decision
    saved = list(tmp_path.glob("bms-*.msg"))
    if case.verdict.startswith("reject:"):
        assert decision.action is Action.REJECT, decision
        assert decision.tag == case.verdict.split(":", 1)[1]
        assert (decision.code, decision.xcode) == ("550", "5.7.1")
        assert not archive.bodies and not saved
        return
    assert not decision.final, decision
    [delivered] = archive.bodies
    if case.verdict == "defang":
        assert new is not None and new == delivered
        [original] = saved
        assert (original.stat().st_mode & 0o777) == 0o600
        # A replaced part's warning says where the original is (a cleaned
        # HTML part only gets the "script removed" comment).
        assert (b"removed because" in new) == (str(original).encode() in new)
    else:
        assert new is None and not saved
        assert delivered == split_message(case.build())[1]
    for part in case.body_contains:
        assert part in delivered, part
    for part in case.body_lacks:
        assert part not in delivered, part
