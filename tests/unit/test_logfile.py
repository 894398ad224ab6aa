"""The log file handler follows a logrotate move within a second, with no
stat per record."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from bmslib import logfile
from Milter import gilio


def _record(text: str) -> logging.LogRecord:
    return logging.LogRecord("bms", logging.INFO, __file__, 1, text, None, None)


def clocked_handler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                    ) -> tuple[list[float], Path, logfile.RotationAwareFileHandler]:
    """A handler on ``tmp_path/milter.log`` whose clock is ``clock[0]``."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    path = tmp_path / "milter.log"
    return clock, path, logfile.RotationAwareFileHandler(str(path))


def test_a_moved_file_is_reopened_after_the_check_interval(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock, path, handler = clocked_handler(tmp_path, monkeypatch)
    try:
        handler.emit(_record("first"))
        os.rename(path, tmp_path / "milter.log.1")
        clock[0] += 0.5
        handler.emit(_record("within the second"))  # still the moved file
        assert not path.exists()
        clock[0] += logfile.CHECK_INTERVAL
        handler.emit(_record("after the second"))
    finally:
        handler.close()
    assert (tmp_path / "milter.log.1").read_text() == "first\nwithin the second\n"
    assert path.read_text() == "after the second\n"


def test_no_stat_per_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    handler = logfile.RotationAwareFileHandler(str(tmp_path / "milter.log"))
    stats: list[str] = []
    real_stat = os.stat

    def counting_stat(path: str, *args: object, **kw: object) -> os.stat_result:
        stats.append(path)
        return real_stat(path, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", counting_stat)
    try:
        for i in range(100):
            handler.emit(_record(f"line {i}"))
    finally:
        handler.close()
    assert len(stats) <= 1
    assert len((tmp_path / "milter.log").read_text().splitlines()) == 100


def test_each_record_is_written_at_once_by_the_call_that_keeps_the_gil(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[bytes] = []
    real = gilio.write_all

    def spy(fd: int, data: bytes) -> None:
        written.append(data)
        real(fd, data)

    monkeypatch.setattr(gilio, "write_all", spy)
    path = tmp_path / "milter.log"
    handler = logfile.RotationAwareFileHandler(str(path), encoding="utf-8")
    try:
        handler.emit(_record("connect from höst.example"))
        # On the disk before the next record, with nothing left to flush.
        assert path.read_text(encoding="utf-8") == "connect from höst.example\n"
        handler.emit(_record("second"))
    finally:
        handler.close()
    assert written == ["connect from höst.example\n".encode(), b"second\n"]
    assert path.read_text(encoding="utf-8") == "connect from höst.example\nsecond\n"


def test_a_write_error_goes_to_handle_error_not_to_the_caller(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(fd: int, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gilio, "write_all", full)
    handler = logfile.RotationAwareFileHandler(str(tmp_path / "milter.log"))
    errors: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", errors.append)
    try:
        handler.emit(_record("lost"))
    finally:
        handler.close()
    assert [r.getMessage() for r in errors] == ["lost"]


class _NoLock:
    """A handler lock that fails the test when a record takes it."""

    def acquire(self, *args: object) -> bool:
        raise AssertionError("the write path took the handler's lock")

    __enter__ = acquire

    def release(self) -> None:
        raise AssertionError("released a lock never taken")

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_records_take_no_lock_and_a_reopen_keeps_the_descriptor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock, path, handler = clocked_handler(tmp_path, monkeypatch)
    try:
        assert handler.stream is not None
        fd = handler.stream.fileno()
        real_lock = handler.lock
        handler.lock = _NoLock()  # type: ignore[assignment]
        handler.handle(_record("no lock taken"))
        handler.lock = real_lock
        os.rename(path, tmp_path / "milter.log.1")
        clock[0] += logfile.CHECK_INTERVAL
        handler.handle(_record("in the new file"))
        # The same number now writes to the new file: a writer that read it
        # before the reopen writes to one file or the other, never elsewhere.
        assert handler.stream.fileno() == fd
        handler.reopen()  # what SIGUSR1 does: the same again
        assert handler.stream.fileno() == fd
        handler.handle(_record("after the reopen"))
    finally:
        handler.close()
    assert (tmp_path / "milter.log.1").read_text() == "no lock taken\n"
    assert path.read_text() == "in the new file\nafter the reopen\n"


def test_after_close_a_record_goes_nowhere_not_into_a_file_that_took_the_number(
        tmp_path: Path) -> None:
    path = tmp_path / "milter.log"
    handler = logfile.RotationAwareFileHandler(str(path))
    handler.handle(_record("before"))
    assert handler.stream is not None
    fd = handler.stream.fileno()
    handler.close()
    other = os.open(tmp_path / "other", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        assert other != fd  # the number is still taken (by /dev/null) until the handler goes
        handler.handle(_record("a late record"))  # a thread that raced the close
    finally:
        os.close(other)
    assert path.read_text() == "before\n"
    assert (tmp_path / "other").read_bytes() == b""
