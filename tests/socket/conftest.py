"""Fixtures for the socket tier: the testbed's in-process MilterServer."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from testbed.milter import RunningMilter
from testbed.milter import start_milter as _start


@pytest.fixture
def start_milter() -> Iterator[Callable[..., RunningMilter]]:
    """start_milter(factory, spec="inet:0@127.0.0.1", **registration); stopped after the test."""
    started: list[RunningMilter] = []

    def start(*args: Any, **kwargs: Any) -> RunningMilter:
        running = _start(*args, **kwargs)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()
