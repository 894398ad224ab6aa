"""Polling with a deadline: the testbed never sleeps in place of an assertion."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition did not become true in time; the message says what was awaited."""


def wait_for(condition: Callable[[], T | None], timeout: float, what: str,
             interval: float = 0.02, detail: Callable[[], str] | None = None) -> T:
    """Call ``condition`` until it returns something truthy and return that.

    Raises :class:`WaitTimeout` after ``timeout`` seconds, naming ``what`` was
    awaited and adding ``detail()`` (for example the tail of a log file)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            extra = ""
            if detail is not None:
                try:
                    extra = "\n" + detail()
                except Exception as exc:  # a diagnostic must not hide the timeout
                    extra = f"\n(no detail: {exc})"
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(interval)


def tail(path: str, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file (for error messages)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        return f"({path}: {exc})"
    text = data.decode("utf-8", "replace").splitlines()[-lines:]
    return f"--- last {len(text)} lines of {path} ---\n" + "\n".join(text)
