"""Fixtures for the pure unit tier."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import Milter


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
