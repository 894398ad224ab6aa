"""What the framework tells the world about its work: an observer passed in.

The server reports each MTA connection it serves and each worker process that
exits; the context reports how long each callback ran.  The framework knows
nothing of what listens: the default does nothing, and an application plugs
in its own (bms: its Prometheus metrics) through ``Registration.observer`` or
``MilterServer(observer=...)``.  Observers are called on the connection's
thread and must not block or raise.
"""

from __future__ import annotations

from typing import Final, Protocol


class Observer(Protocol):
    def connection_opened(self) -> None: ...
    def connection_closed(self) -> None: ...
    def callback(self, name: str, seconds: float) -> None: ...
    def process_exited(self, pid: int) -> None: ...


class NullObserver:
    """Observes nothing."""

    def connection_opened(self) -> None:
        pass

    def connection_closed(self) -> None:
        pass

    def callback(self, name: str, seconds: float) -> None:
        pass

    def process_exited(self, pid: int) -> None:
        pass


NULL_OBSERVER: Final[Observer] = NullObserver()
