"""Fixtures for the pure unit tier."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import Milter

# ``tests.milters`` (the shared example milters) is imported by its package
# path, so the repository root must be importable whatever runs pytest.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


@pytest.fixture
def use_factory() -> Iterator[Callable[[Callable[[], Milter.Base]], None]]:
    """use_factory(cls): make ``Milter.factory`` create ``cls``; restored afterwards."""
    saved = Milter.factory

    def use(factory: Callable[[], Milter.Base]) -> None:
        Milter.factory = factory

    yield use
    Milter.factory = saved


@pytest.fixture
def noreply_is_7(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Milter.NOREPLY`` with libmilter's value; importing ``Milter.test``
    rebinds it to CONTINUE for the whole process (PYMILTER_API.md §10.3)."""
    monkeypatch.setattr(Milter, "NOREPLY", 7)
