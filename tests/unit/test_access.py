"""``bmslib.access``: the sendmail access file read as text (SPEC §5)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmslib.access import AccessError, AccessFile, parse_value, subject_candidates
from bmslib.interfaces import Access
from bmslib.policy.decision import AccessKind, AccessValue

ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def write(tmp_path: Path, text: str | bytes, name: str = "access") -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def access(tmp_path: Path, text: str | bytes, *, colon: bool = True,
           nulls: bool = False) -> AccessFile:
    return AccessFile(write(tmp_path, text), colon, nulls)


def err(text: str, code: str = "550", xcode: str = "") -> AccessValue:
    return AccessValue(AccessKind.ERROR, code, xcode, text)


def test_is_an_access() -> None:
    a: Access = AccessFile(str(ROOT / "access"))
    assert a.lookup("SPF-Pass", "someone@example.com") == AccessValue(AccessKind.OK)


def test_shipped_sample_has_no_malformed_lines(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bms"):
        a = AccessFile(str(ROOT / "access"))
    assert caplog.records == []
    assert a.lookup("SPF-PermError", "x@y.example") == AccessValue(AccessKind.REJECT)
    assert a.lookup("SPF-TempError", "x@y.example") == AccessValue(AccessKind.TEMPFAIL)
    assert a.lookup("SPF-Neutral", "x@y.example") is None  # the built-in default decides


# -- lookup order -------------------------------------------------------------------

ORDER = {
    "user@a.b.example.com": [
        "T:user@a.b.example.com", "T:user@", "T:a.b.example.com", "T:b.example.com",
        "T:.b.example.com", "T:example.com", "T:.example.com", "T:com", "T:.com", "T:", "T"],
    "a.b.example.com": [
        "T:a.b.example.com", "T:b.example.com", "T:.b.example.com", "T:example.com",
        "T:.example.com", "T:com", "T:.com", "T:", "T"],
    "192.168.1.2": ["T:192.168.1.2", "T:192.168.1", "T:192.168", "T:192", "T:"],
    "2001:db8:0:1::5": ["T:IPv6:2001:db8:0:1::5", "T:IPv6:2001:db8:0:1", "T:IPv6:2001:db8:0",
                        "T:IPv6:2001:db8", "T:IPv6:2001", "T:"],
    "joe": ["T:joe", "T:"],
    "<>": ["T:<>", "T:"],
    "user@[192.0.2.1]": ["T:user@[192.0.2.1]", "T:user@", "T:192.0.2.1", "T:192.0.2", "T:"],
}


@pytest.mark.parametrize("subject", list(ORDER))
def test_lookup_order(tmp_path: Path, subject: str) -> None:
    """Every key applies; removing the winner each time walks the order."""
    keys = list(ORDER[subject])
    while keys:
        text = "".join(f'{k}\tERROR:"550 5.7.1 {k}"\n' for k in reversed(keys))
        a = access(tmp_path, text)
        assert a.lookup("T", subject) == err(keys[0], xcode="5.7.1"), keys
        keys.pop(0)
    assert access(tmp_path, "Other:\tOK\n").lookup("T", subject) is None


@pytest.mark.parametrize(("key", "subject", "hit"), [
    ("T:example.com", "user@mail.example.com", True),   # a domain covers subdomains
    ("T:example.com", "user@example.com", True),
    ("T:.example.com", "user@example.com", False),      # a leading dot: subdomains only
    ("T:.example.com", "user@mail.example.com", True),
    ("T:example.com", "user@badexample.com", False),
    ("T:user@", "user@anywhere.example", True),
    ("T:user@", "otheruser@anywhere.example", False),
    ("T:user@example.com", "user@sub.example.com", False),
    ("T:192.168.1", "192.168.1.77", True),
    ("T:192.168.1", "192.168.10.7", False),
    ("T:192.168", "192.168.10.7", True),
    ("T:IPv6:2001:DB8:0000::1", "2001:db8::1", True),   # keys are normalised
    ("T:IPv6:2001:0db8", "2001:db8::99", True),
    ("T:IPv6:2001:db8::1", "IPv6:2001:db8::1", True),
    ("T:192.0.2.1", "::ffff:192.0.2.1", True),          # IPv4-mapped
    ("T:[192.0.2.1]", "192.0.2.1", True),
    ("T:example.com", "user@EXAMPLE.COM.", True),
])
def test_key_matching(tmp_path: Path, key: str, subject: str, hit: bool) -> None:
    a = access(tmp_path, f"{key} REJECT\n")
    assert (a.lookup("T", subject) is not None) is hit


def test_keys_tags_and_subjects_are_case_insensitive(tmp_path: Path) -> None:
    a = access(tmp_path, "spf-NEUTRAL:User@Example.COM ok\nSMTP-AUTH:example.com Reject\n")
    assert a.lookup("SPF-Neutral", "user@example.com") == AccessValue(AccessKind.OK)
    assert a.lookup("spf-neutral", "USER@EXAMPLE.COM") == AccessValue(AccessKind.OK)
    assert a.lookup("SMTP-Auth", "bad@Example.Com") == AccessValue(AccessKind.REJECT)


def test_smtp_auth_keys(tmp_path: Path) -> None:
    """The original's test/access, with its expectations (but a domain key
    covers subdomains, as in sendmail)."""
    a = access(tmp_path, "SPF-Pass:example.com\tOK\nSPF-Neutral:example.com\tREJECT\n"
               "SPF-Permerror:foo@bad.example.com\tOK\nSPF-Permerror:          REJECT\n"
               "SMTP-Auth:good@example.com      OK\nSMTP-Auth:example.com      REJECT\n"
               "SMTP-Auth:bad@localhost.localdomain     REJECT\nSMTP-Test:      REJECT\n")
    ok, reject = AccessValue(AccessKind.OK), AccessValue(AccessKind.REJECT)
    assert a.lookup("SMTP-Auth", "good@example.com") == ok
    assert a.lookup("SMTP-Auth", "bad@example.com") == reject
    assert a.lookup("SMTP-Auth", "bad@bad.example.com") == reject
    assert a.lookup("SMTP-Auth", "bad@other.example") is None
    assert a.lookup("SMTP-Test", "any@random.com") == reject
    assert a.lookup("SPF-PermError", "foo@bad.example.com") == ok
    assert a.lookup("SPF-PermError", "clueless@bad.example.com") == reject


def test_untagged_entries_apply_to_connect_from_to_only(tmp_path: Path) -> None:
    a = access(tmp_path, "spammer.example REJECT\n192.0.2 REJECT\n"
               "IPv6:2001:db8::66 DISCARD\nConnect:192.0.2.1 OK\n")
    reject = AccessValue(AccessKind.REJECT)
    assert a.lookup("From", "x@mail.spammer.example") == reject
    assert a.lookup("To", "x@spammer.example") == reject
    assert a.lookup("Connect", "192.0.2.7") == reject
    assert a.lookup("Connect", "192.0.2.1") == AccessValue(AccessKind.OK)  # tagged first
    assert a.lookup("Connect", "2001:db8::66") == AccessValue(AccessKind.DISCARD)
    assert a.lookup("SPF-Pass", "x@spammer.example") is None


def test_skip_stops_the_search(tmp_path: Path) -> None:
    a = access(tmp_path, "T:example.com REJECT\nT:mail.example.com SKIP\nT: DSN\n")
    assert a.lookup("T", "x@mail.example.com") is None
    assert a.lookup("T", "x@www.example.com") == AccessValue(AccessKind.REJECT)
    assert a.lookup("T", "x@other.example") == AccessValue(AccessKind.DSN)


def test_colon_off_uses_bang(tmp_path: Path) -> None:
    a = access(tmp_path, "SPF-Neutral!example.com REJECT\nSMTP-Test! REJECT\n"
               "Connect!IPv6:2001:db8::1 OK\n", colon=False)
    assert a.lookup("SPF-Neutral", "x@example.com") == AccessValue(AccessKind.REJECT)
    assert a.lookup("SMTP-Test", "x@y.example") == AccessValue(AccessKind.REJECT)
    assert a.lookup("Connect", "2001:db8::1") == AccessValue(AccessKind.OK)
    b = access(tmp_path, "SPF-Neutral:example.com REJECT\n", colon=False)
    assert b.lookup("SPF-Neutral", "x@example.com") is None


def test_nulls_are_dropped(tmp_path: Path) -> None:
    a = access(tmp_path, b"T:example.com\0 REJECT\0\n", nulls=True)
    assert a.lookup("T", "x@example.com") == AccessValue(AccessKind.REJECT)


@pytest.mark.parametrize("subject", ["", "   ", "@", "user@", "a..b", ".", "[", "ipv6:zz"])
def test_odd_subjects_do_not_raise(tmp_path: Path, subject: str) -> None:
    a = access(tmp_path, "T: OK\n")
    assert a.lookup("T", subject) == AccessValue(AccessKind.OK)


# -- values -------------------------------------------------------------------------

VALUES = [
    ("OK", AccessValue(AccessKind.OK)),
    ("ok", AccessValue(AccessKind.OK)),
    ("RELAY", AccessValue(AccessKind.OK)),
    ("CBV", AccessValue(AccessKind.CBV)),
    ("DSN", AccessValue(AccessKind.DSN)),
    ("REJECT", AccessValue(AccessKind.REJECT)),
    ("Reject", AccessValue(AccessKind.REJECT)),
    ("TEMPFAIL", AccessValue(AccessKind.TEMPFAIL)),
    ("WHITELIST", AccessValue(AccessKind.WHITELIST)),
    ("BLACKLIST", AccessValue(AccessKind.BLACKLIST)),
    ("BAN", AccessValue(AccessKind.BAN)),
    ("DISCARD", AccessValue(AccessKind.DISCARD)),
    ("SKIP", None),
    ("OK   # trailing comment", AccessValue(AccessKind.OK)),
    ('ERROR:"550 5.7.1 Go away"', err("Go away", "550", "5.7.1")),
    ("ERROR:5.7.1:550 Go away", err("Go away", "550", "5.7.1")),
    ("ERROR:550 Go away", err("Go away", "550", "")),
    ('ERROR:"550 Go away"', err("Go away", "550", "")),
    ("ERROR:550 5.7.1 Go away", err("Go away", "550", "5.7.1")),
    ("ERROR:550", err("", "550", "")),
    ('error:"450 4.7.1 Later"', err("Later", "450", "4.7.1")),
    ("ERROR:4.2.0:450 Try later", err("Try later", "450", "4.2.0")),
    ('ERROR:"550 5.7.1 We # love hashes" # but not this', err("We # love hashes", "550",
                                                              "5.7.1")),
    ("ERROR:550 5.7.1 Go away # comment", err("Go away", "550", "5.7.1")),
    ("ERROR: 550 5.7.1 spaced", err("spaced", "550", "5.7.1")),
    ("ERROR:550 5.7.1a text", err("5.7.1a text", "550", "")),
]


@pytest.mark.parametrize(("text", "value"), VALUES)
def test_values(tmp_path: Path, text: str, value: AccessValue | None) -> None:
    assert parse_value(text) == value
    a = access(tmp_path, f"T:example.com {text}\nT: WHITELIST\n")
    expected = value  # SKIP: nothing, and the default is not consulted
    assert a.lookup("T", "x@example.com") == expected


MALFORMED = [
    ("", "no value"),
    ("# only a comment", "no value"),
    ("ACCEPT", "unknown value 'ACCEPT'"),
    ("OK please", "unexpected text after OK: 'please'"),
    ("ERROR:", "ERROR: expected"),
    ('ERROR:"550 5.7.1 text', "missing closing quote"),
    ('ERROR:"550 text" extra', "unexpected text after the quotes"),
    ("ERROR:250 fine", "ERROR: expected"),
    ("ERROR:5501 text", "ERROR: expected"),
    ("ERROR:550 4.7.1 mixed", "disagree"),
    ("ERROR:4.7.1:550 mixed", "disagree"),
    ("ERROR:go away", "ERROR: expected"),
]


@pytest.mark.parametrize(("text", "reason"), MALFORMED)
def test_malformed_values(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_value(text)
    assert reason in str(info.value)


def test_malformed_lines_are_logged_with_line_numbers_and_skipped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = ("# comment\n\nT:a.example OK\nT:b.example\nT:c.example MAYBE\n"
            "T:d.example ERROR:\"550 5.7.1 unterminated\nT:a.example REJECT\n"
            "T:e.example\tCBV\t# fine\nT:f.example ERROR:\"550 bad\x07bell\"\n")
    with caplog.at_level(logging.WARNING, logger="bms"):
        a = access(tmp_path, text)
    path = str(tmp_path / "access")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        f"{path}:4: 'T:b.example': no value; line skipped",
        f"{path}:5: 'T:c.example': unknown value 'MAYBE' (expected OK, CBV, DSN, REJECT, "
        "TEMPFAIL, WHITELIST, BLACKLIST, BAN, DISCARD, QUARANTINE, RELAY, SKIP or ERROR:...); "
        "line skipped",
        f"{path}:6: 'T:d.example': ERROR: missing closing quote in '\"550 5.7.1 "
        "unterminated'; line skipped",
        f"{path}:7: 'T:a.example': given again (first at line 3); line skipped",
        f"{path}:9: 'T:f.example': ERROR: control characters in the reply text; line skipped",
    ]
    assert all(r.name == "bms" for r in caplog.records)
    assert len(a) == 2
    assert a.lookup("T", "x@a.example") == AccessValue(AccessKind.OK)  # the first wins
    assert a.lookup("T", "x@b.example") is None
    assert a.lookup("T", "x@e.example") == AccessValue(AccessKind.CBV)


# -- files ----------------------------------------------------------------------------


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    path = str(tmp_path / "nope")
    with pytest.raises(AccessError) as info:
        AccessFile(path)
    assert str(info.value) == f"{path}: cannot read: No such file or directory"


def test_db_path_reads_the_text_file_beside_it(tmp_path: Path) -> None:
    text = write(tmp_path, "T: OK\n")
    (tmp_path / "access.db").write_bytes(b"\x00\x06\x15\x61 berkeley db garbage")
    a = AccessFile(text + ".db")
    assert a.path == text and a.requested_path == text + ".db"
    assert a.lookup("T", "x@y.example") == AccessValue(AccessKind.OK)
    # Without a .db file at all, the text file is used too.
    os.unlink(tmp_path / "access.db")
    assert AccessFile(text + ".db").path == text


def test_db_without_text_file_is_an_error(tmp_path: Path) -> None:
    db = tmp_path / "access.db"
    db.write_bytes(b"\x00\x06\x15\x61")
    with pytest.raises(AccessError, match="a Berkeley DB file; bms reads the text file"):
        AccessFile(str(db))
    with pytest.raises(AccessError, match="cannot read"):
        AccessFile(str(tmp_path / "other.db"))


def test_reload_when_the_file_changes(tmp_path: Path) -> None:
    clock = FakeClock()
    path = write(tmp_path, "T: OK\n")
    a = AccessFile(path, reload_check_interval=1.0, clock=clock)
    assert a.lookup("T", "x@y.example") == AccessValue(AccessKind.OK)
    Path(path).write_text("T: REJECT\n")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    clock.t += 0.5  # not checked before the interval has passed
    assert a.lookup("T", "x@y.example") == AccessValue(AccessKind.OK)
    clock.t += 0.6
    assert a.lookup("T", "x@y.example") == AccessValue(AccessKind.REJECT)


def test_reload_when_the_file_is_replaced(tmp_path: Path) -> None:
    clock = FakeClock()
    path = write(tmp_path, "T: OK\n")
    a = AccessFile(path, clock=clock)
    new = write(tmp_path, "T: DSN\n", "access.new")
    os.replace(new, path)
    clock.t += 5
    assert a.lookup("T", "x@y.example") == AccessValue(AccessKind.DSN)


def test_forced_reload(tmp_path: Path) -> None:
    path = write(tmp_path, "T: OK\n")
    a = AccessFile(path, reload_check_interval=3600)
    Path(path).write_text("T: BAN\n")
    assert a.lookup("T", "x@y.example") == AccessValue(AccessKind.OK)
    assert a.reload() is True
    assert a.lookup("T", "x@y.example") == AccessValue(AccessKind.BAN)


def test_vanished_file_keeps_the_old_entries(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    path = write(tmp_path, "T: OK\n")
    a = AccessFile(path, clock=clock)
    os.unlink(path)
    with caplog.at_level(logging.ERROR, logger="bms"):
        for _ in range(3):
            clock.t += 2
            assert a.lookup("T", "x@y.example") == AccessValue(AccessKind.OK)
        assert a.reload() is False
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == f"access file {path}: No such file or directory; keeping the " \
        "previous entries"
    assert len(messages) == 2  # once from the checks, once from reload()
    write(tmp_path, "T: REJECT\n")
    clock.t += 2
    assert a.lookup("T", "x@y.example") == AccessValue(AccessKind.REJECT)


def test_lookups_from_many_threads_while_reloading(tmp_path: Path) -> None:
    path = write(tmp_path, "T: OK\n")
    a = AccessFile(path, reload_check_interval=0.0)
    errors: list[BaseException] = []
    seen: set[AccessValue | None] = set()

    def reader() -> None:
        try:
            for _ in range(500):
                seen.add(a.lookup("T", "x@y.example"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(20):  # replaced whole, as an editor or makemap-like tool would
        os.replace(write(tmp_path, "T: OK\n" if i % 2 else "T:  REJECT\n", "new"), path)
        a.reload()
    for t in threads:
        t.join()
    assert errors == []
    assert seen <= {AccessValue(AccessKind.OK), AccessValue(AccessKind.REJECT)}


# -- 8-bit and hostile input --------------------------------------------------------------


def test_8bit_keys_are_utf8_with_surrogateescape(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 survive as surrogates and match subjects the
    protocol layer decoded the same way."""
    a = access(tmp_path, b"T:caf\xe9.example REJECT\nT:b\xc3\xbccher.example OK\n")
    latin1_domain = b"caf\xe9.example".decode("utf-8", "surrogateescape")
    assert a.lookup("T", "x@" + latin1_domain) == AccessValue(AccessKind.REJECT)
    assert a.lookup("T", "x@bücher.example") == AccessValue(AccessKind.OK)
    assert a.lookup("T", "x@cafe.example") is None


def test_hostile_lines_are_logged_safely(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bms"):
        a = access(tmp_path, b"T:x\xff\x1b[31m NOPE\nT:\x00 OK\n" + b"T:" + b"a" * 100000
                   + b" OK\n")
    assert len(a) == 1
    for record in caplog.records:
        assert "\x1b" not in record.getMessage() and "\n" not in record.getMessage()


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400), st.text(max_size=40))
def test_any_file_loads_and_any_lookup_answers(tmp_path_factory: pytest.TempPathFactory,
                                               data: bytes, subject: str) -> None:
    logging.getLogger("bms").disabled = True
    try:
        path = tmp_path_factory.mktemp("acc") / "access"
        path.write_bytes(data)
        a = AccessFile(str(path))
        for tag in ("SPF-Pass", "Connect", "From", "SMTP-Auth"):
            value = a.lookup(tag, subject)
            assert value is None or isinstance(value, AccessValue)
    finally:
        logging.getLogger("bms").disabled = False


@given(st.text(max_size=60))
def test_subject_candidates_never_raise(subject: str) -> None:
    for cand in subject_candidates(subject):
        assert isinstance(cand, str)
