"""pytest glue for the test bed: import its names into a conftest.py.

    from testbed.pytest_plugin import *  # noqa: F403

* tests marked ``@pytest.mark.e2e`` are skipped ("run ./test.sh") unless
  ``BMS_NETNS=1`` says we are inside the private loopback-only namespace;
* ``milter_factory``: start milters for one test (stopped at teardown).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from . import SKIP_REASON, in_private_netns
from .milter import Factory, RunningMilter, start_milter


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if in_private_netns():
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            item.add_marker(skip)


def require_netns() -> None:
    """Skip the calling test or fixture outside the private namespace."""
    if not in_private_netns():
        pytest.skip(SKIP_REASON)


@pytest.fixture
def milter_factory() -> Iterator[Callable[..., RunningMilter]]:
    """``milter_factory(factory, spec="inet:0@127.0.0.1", **kw)``: a milter
    serving for this test only."""
    started: list[RunningMilter] = []

    def start(factory: Factory, spec: str = "inet:0@127.0.0.1", **kw: Any) -> RunningMilter:
        running = start_milter(factory, spec, **kw)
        started.append(running)
        return running

    yield start
    for running in reversed(started):
        running.stop()


__all__ = ["milter_factory", "pytest_collection_modifyitems", "require_netns"]
