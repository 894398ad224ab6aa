"""The one-time import of the original flat files (bmslib.state.legacy):
file discovery (rotations, gzip), line parsing, warnings naming FILE:LINE,
expiry arithmetic and run-once, against a recording fake store."""

from __future__ import annotations

import gzip
import math
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bmslib.state.legacy import (
    MARKER_KEY,
    MARKER_KIND,
    LegacyImport,
    Malformed,
    import_legacy,
    parse_ban_domain,
    parse_ban_ip,
    parse_list_line,
    parse_timestamp,
    words,
)

DAY = 86400.0
UTC = timezone.utc
ADDED = datetime(2024, 1, 5, 15, 0, 1, tzinfo=UTC).timestamp()  # 2024Jan05 10:00:01 EST
NOW = ADDED + 2 * DAY


class FakeStore:
    """Records what the import stores; bans and lists keep the later expiry."""

    def __init__(self) -> None:
        self.bans: dict[tuple[str, str], float] = {}
        self.reasons: dict[tuple[str, str], str] = {}
        self.lists: dict[tuple[str, str], float] = {}
        self.cache: dict[tuple[str, str], tuple[str, float]] = {}
        self.calls = 0

    def _ban(self, kind: str, key: str, until: float, reason: str) -> None:
        self.calls += 1
        self.bans[kind, key] = max(until, self.bans.get((kind, key), until))
        self.reasons[kind, key] = reason

    def ban_ip(self, ip: str, until: float, reason: str) -> None:
        self._ban("ip", ip, until, reason)

    def ban_domain(self, domain: str, until: float, reason: str) -> None:
        self._ban("domain", domain, until, reason)

    def list_add(self, kind: str, entry: str, until: float) -> None:
        self.calls += 1
        self.lists[kind, entry] = max(until, self.lists.get((kind, entry), until))

    def cache_get(self, kind: str, key: str, now: float) -> str | None:
        value = self.cache.get((kind, key))
        return value[0] if value is not None and value[1] > now else None

    def cache_put(self, kind: str, key: str, value: str, until: float) -> None:
        self.cache[kind, key] = (value, until)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


def run(store: FakeStore, directory: Path, now: float = NOW, ban_days: float = 7) -> LegacyImport:
    return import_legacy(store, str(directory), now, ban_days)


def locations(result: LegacyImport) -> list[str]:
    """``FILE:LINE`` (or ``FILE``) of each warning, without the directory."""
    return [w.split(": ")[0].rsplit("/", 1)[1] for w in result.warnings]


# --- discovery: rotations and gzip -------------------------------------------------------

def test_rotated_and_gzipped_ban_files_are_all_read(store: FakeStore, tmp_path: Path) -> None:
    (tmp_path / "banned_ips").write_text("192.0.2.1\n")
    (tmp_path / "banned_ips.1").write_text("192.0.2.2\n192.0.2.1\n")
    with gzip.open(tmp_path / "banned_ips.2.gz", "wt") as f:
        f.write("2001:DB8:0:0::7\n")
    (tmp_path / "banned_ips-20240101").write_text("::ffff:198.51.100.3\n")
    (tmp_path / "banned_domains").write_text("Spam.Example.\n")
    with gzip.open(tmp_path / "banned_domains.1.gz", "wb") as g:
        g.write(b"*.bulk.test\r\n")
    (tmp_path / "banned_ips.d").mkdir()  # not a file: ignored
    (tmp_path / "whitelist.log").write_text("not@read.example\n")  # not a legacy name
    got = run(store, tmp_path)
    assert (got.banned_ips, got.banned_domains, got.warnings) == (4, 2, ())
    assert [Path(f).name for f in got.files] == [
        "banned_domains", "banned_domains.1.gz", "banned_ips", "banned_ips-20240101",
        "banned_ips.1", "banned_ips.2.gz"]
    until = NOW + 7 * DAY
    assert store.bans == {
        ("ip", "192.0.2.1"): until, ("ip", "192.0.2.2"): until, ("ip", "2001:db8::7"): until,
        ("ip", "198.51.100.3"): until, ("domain", "spam.example"): until,
        ("domain", "*.bulk.test"): until}
    assert store.reasons["ip", "192.0.2.1"] == "imported from banned_ips"
    assert store.calls == 6  # an address in two files is stored once


def test_ban_days_sets_the_ban_length(store: FakeStore, tmp_path: Path) -> None:
    (tmp_path / "banned_ips").write_text("192.0.2.1\n")
    run(store, tmp_path, ban_days=1.5)
    assert store.bans["ip", "192.0.2.1"] == NOW + 1.5 * DAY


# --- malformed lines and files ------------------------------------------------------------

def test_malformed_lines_are_skipped_with_file_and_line(store: FakeStore,
                                                        tmp_path: Path) -> None:
    (tmp_path / "banned_ips").write_text(
        "# banned by hand\n\n192.0.2.1\n300.1.2.3\n192.0.2.2 192.0.2.3\n192.0.2.0/24\n"
        "192.0.2.4  # trailing comment\n")
    (tmp_path / "banned_domains").write_text("ok.example\n*.\nbad domain\n-x..y\n")
    (tmp_path / "auto_whitelist.log").write_text(
        "good@example.com 2024Jan05 10:00:01 EST\n"
        "@example.com\n"
        "a@b@ 2024Jan05 10:00:01 EST\n"
        "x@example.com 2024Foo05 10:00:01 EST\n"
        "x@example.com 2024Feb30 10:00:01 EST\n"
        "x@example.com 2024Jan05 25:00:01 EST\n"
        "x@example.com 2024Jan05 10:00:01 E$T\n"
        "x@example.com 2024Jan05\n"
        "x@example.com 2024Jan05 10:00:01 EST extra\n")
    (tmp_path / "blacklist.log").write_bytes(b"evil@ex\xe4mple.com\n\x1b[31mred\n")
    got = run(store, tmp_path)
    assert locations(got) == [
        "auto_whitelist.log:2", "auto_whitelist.log:3", "auto_whitelist.log:4",
        "auto_whitelist.log:5", "auto_whitelist.log:6", "auto_whitelist.log:7",
        "auto_whitelist.log:8", "auto_whitelist.log:9",
        "banned_domains:2", "banned_domains:3", "banned_domains:4",
        "banned_ips:4", "banned_ips:5", "banned_ips:6",
        "blacklist.log:1", "blacklist.log:2"]
    assert (got.banned_ips, got.banned_domains, got.whitelist, got.blacklist) == (2, 1, 1, 0)
    assert all("\n" not in w and "\x1b" not in w and "\udce4" not in w for w in got.warnings)
    assert got.warnings[0].endswith("auto_whitelist.log:2: empty local part: @example.com")
    assert "banned_ips:4: not an IP address: 300.1.2.3" in got.warnings[-5]
    assert "bad timestamp" in got.warnings[3]
    assert "expected ADDRESS-OR-DOMAIN [YYYYMonDD HH:MM:SS TZ]" in got.warnings[7]


def test_unreadable_file_is_one_warning(store: FakeStore, tmp_path: Path) -> None:
    (tmp_path / "banned_ips").write_text("192.0.2.1\n")
    (tmp_path / "banned_ips.1.gz").write_bytes(b"this is not gzip\n192.0.2.2\n")
    with gzip.open(tmp_path / "banned_ips.2.gz", "wb") as f:
        f.write(b"192.0.2.3\n" * 100)
    truncated = (tmp_path / "banned_ips.2.gz").read_bytes()[:-12]
    (tmp_path / "banned_ips.2.gz").write_bytes(truncated)
    got = run(store, tmp_path)
    assert locations(got) == ["banned_ips.1.gz", "banned_ips.2.gz"]
    assert all(": unreadable: " in w for w in got.warnings)
    assert got.banned_ips == 1 and [Path(f).name for f in got.files] == ["banned_ips"]


def test_unlistable_directory_is_one_warning(store: FakeStore, tmp_path: Path) -> None:
    afile = tmp_path / "not-a-directory"
    afile.write_text("")
    got = run(store, afile)
    assert len(got.warnings) == 1 and ": unreadable: " in got.warnings[0]
    assert store.cache == {}


# --- expiry -------------------------------------------------------------------------------

def test_list_expiry_is_counted_from_the_timestamp(store: FakeStore, tmp_path: Path) -> None:
    (tmp_path / "auto_whitelist.log").write_text(
        "Alice@Example.COM 2024Jan05 10:00:01 EST\n"
        "partner.example\n"
        "gone@example.com 2023Oct01 00:00:00 UTC\n")
    (tmp_path / "blacklist.log").write_text(
        "bad@spam.example 2024Jan05 15:00:01 GMT\n"
        "old@spam.example 2023Dec01 00:00:00 +0000\n"
        "spam.example\n")
    got = run(store, tmp_path)
    assert store.lists == {
        ("whitelist", "alice@example.com"): ADDED + 60 * DAY,
        ("whitelist", "partner.example"): math.inf,
        ("blacklist", "bad@spam.example"): ADDED + 30 * DAY,
        ("blacklist", "spam.example"): math.inf}
    assert (got.whitelist, got.blacklist, got.expired) == (2, 2, 2)


def test_entry_seen_twice_keeps_the_later_expiry(store: FakeStore, tmp_path: Path) -> None:
    (tmp_path / "auto_whitelist.log").write_text(
        "a@example.com 2024Jan01 00:00:00 UTC\n"
        "A@example.com 2024Jan03 00:00:00 UTC\n"
        "a@example.com 2024Jan02 00:00:00 UTC\n")
    got = run(store, tmp_path)
    jan3 = datetime(2024, 1, 3, tzinfo=UTC).timestamp()
    assert store.lists == {("whitelist", "a@example.com"): jan3 + 60 * DAY}
    assert got.whitelist == 1


def test_entry_expiring_exactly_now_is_skipped(store: FakeStore, tmp_path: Path) -> None:
    (tmp_path / "blacklist.log").write_text("a@example.com 2024Jan05 10:00:01 EST\n")
    got = run(store, tmp_path, now=ADDED + 30 * DAY)
    assert (got.blacklist, got.expired, store.lists) == (0, 1, {})


@pytest.mark.parametrize(("date", "clock", "zone", "expected"), [
    ("2024Jan05", "10:00:01", "EST", datetime(2024, 1, 5, 15, 0, 1, tzinfo=UTC)),
    ("2024Jul05", "10:00:01", "EDT", datetime(2024, 7, 5, 14, 0, 1, tzinfo=UTC)),
    ("2024jan5", "9:05:00", "PST", datetime(2024, 1, 5, 17, 5, 0, tzinfo=UTC)),
    ("2024Dec31", "23:59:59", "UTC", datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ("2024Mar01", "12:00:00", "+0130", datetime(2024, 3, 1, 10, 30, tzinfo=UTC)),
    ("2024Mar01", "12:00:00", "-0500", datetime(2024, 3, 1, 17, 0, tzinfo=UTC)),
])
def test_timestamps_with_a_known_zone(date: str, clock: str, zone: str,
                                      expected: datetime) -> None:
    assert parse_timestamp(date, clock, zone) == expected.timestamp()


def test_timestamps_without_a_known_zone_are_local_time() -> None:
    local = datetime(2024, 1, 5, 10, 0, 1).timestamp()
    assert parse_timestamp("2024Jan05", "10:00:01") == local
    assert parse_timestamp("2024Jan05", "10:00:01", "CET") == local


@pytest.mark.parametrize(("date", "clock", "zone"), [
    ("2024Foo05", "10:00:01", "UTC"), ("24Jan05", "10:00:01", "UTC"),
    ("2024Feb30", "10:00:01", "UTC"), ("2024Jan05", "10:60:01", "UTC"),
    ("2024Jan05", "10:00", "UTC"), ("2024Jan05", "10:00:01", "+2500"),
    ("2024Jan05", "10:00:01", "Europe/Berlin"), ("0000Jan05", "10:00:01", "UTC"),
])
def test_bad_timestamps(date: str, clock: str, zone: str) -> None:
    with pytest.raises(Malformed):
        parse_timestamp(date, clock, zone)


# --- line parsers -------------------------------------------------------------------------

def test_line_parsers() -> None:
    assert words("  a b #c d") == ["a", "b"]
    assert words("#x") == []
    assert parse_ban_ip(["[IPv6:2001:DB8::1]"]) == "2001:db8::1"
    assert parse_ban_domain(["*.Bulk.Test"]) == "*.bulk.test"
    assert parse_list_line(["Who@Example.com"]) == ("who@example.com", None)
    assert parse_list_line(["Example.com.", "2024Jan05", "15:00:01", "UTC"]) == (
        "example.com", ADDED)
    assert parse_list_line(["caf\udce9@example.com"])[0] == "caf\udce9@example.com"
    for bad in ([], ["a", "b"], ["*."]):
        with pytest.raises(Malformed):
            parse_ban_domain(bad)


# --- run once -----------------------------------------------------------------------------

def test_runs_once_per_store(store: FakeStore, tmp_path: Path) -> None:
    (tmp_path / "banned_ips").write_text("192.0.2.1\n")
    first = run(store, tmp_path)
    assert first.banned_ips == 1 and not first.already_done
    value, until = store.cache[MARKER_KIND, MARKER_KEY]
    assert until == math.inf and str(tmp_path) in value and "1 banned IPs" in value
    (tmp_path / "banned_ips").write_text("192.0.2.1\n192.0.2.2\n")
    again = run(store, tmp_path, now=NOW + 100 * DAY)
    assert again == LegacyImport(already_done=True)
    assert ("ip", "192.0.2.2") not in store.bans
    assert again.summary() == "legacy files: imported before, not read again"
    assert run(FakeStore(), tmp_path).banned_ips == 2  # another store imports


def test_nothing_found_or_nothing_readable_is_not_recorded(store: FakeStore,
                                                          tmp_path: Path) -> None:
    assert run(store, tmp_path / "missing") == LegacyImport()
    assert run(store, tmp_path) == LegacyImport()
    (tmp_path / "banned_ips.1.gz").write_bytes(b"garbage")
    assert len(run(store, tmp_path).warnings) == 1
    assert store.cache == {}
    (tmp_path / "banned_ips").write_text("192.0.2.1\n")
    assert run(store, tmp_path).banned_ips == 1
    assert (MARKER_KIND, MARKER_KEY) in store.cache


def test_summary_is_one_line(store: FakeStore, tmp_path: Path) -> None:
    (tmp_path / "banned_ips").write_text("192.0.2.1\nbogus\n")
    (tmp_path / "auto_whitelist.log").write_text("a@example.com\n")
    assert run(store, tmp_path).summary() == (
        "legacy files: 2 read, 1 banned IPs, 0 banned domains, 1 whitelist and "
        "0 blacklist entries, 0 expired skipped, 1 warnings")
