"""Milter classes that only have a *shape*: which callbacks they override and
with which decorators, every callback returning CONTINUE.  The shape alone
decides what is negotiated (PYMILTER_API.md §6.1), so the unit tests, the
socket tests and the benchmark share these.  Written against the pymilter API
only: they run under pymilter too.

Each function returns a new class, because ``protocol_mask()`` caches its
answer on the class.
"""

from __future__ import annotations

from typing import Any

import Milter


def noop() -> type[Milter.Base]:
    """Every callback overridden: the MTA sends every event and waits for each reply."""

    class NoOp(Milter.Base):
        def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
            return Milter.CONTINUE

        def hello(self, hostname: str) -> int:
            return Milter.CONTINUE

        def envfrom(self, f: str, *params: str) -> int:
            return Milter.CONTINUE

        def envrcpt(self, to: str, *params: str) -> int:
            return Milter.CONTINUE

        def data(self) -> int:
            return Milter.CONTINUE

        def header(self, field: str, value: str) -> int:
            return Milter.CONTINUE

        def eoh(self) -> int:
            return Milter.CONTINUE

        def body(self, blk: bytes) -> int:
            return Milter.CONTINUE

        def eom(self) -> int:
            return Milter.CONTINUE

        def abort(self) -> int:
            return Milter.CONTINUE

        def close(self) -> int:
            return Milter.CONTINUE

    return NoOp


def eom_only() -> type[Milter.Base]:
    """Only ``eom``: every other stage is negotiated away (``SMFIP_NO*``)."""

    class EomOnly(Milter.Base):
        def eom(self) -> int:
            return Milter.CONTINUE

    return EomOnly


def template() -> type[Milter.Base]:
    """The callback shape of pymilter's ``template.myMilter``."""

    class Template(Milter.Base):
        @Milter.noreply
        def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
            return Milter.CONTINUE

        def hello(self, hostname: str) -> int:
            return Milter.CONTINUE

        def envfrom(self, f: str, *params: str) -> int:
            return Milter.CONTINUE

        @Milter.noreply
        def envrcpt(self, to: str, *params: str) -> int:
            return Milter.CONTINUE

        @Milter.noreply
        def header(self, field: str, value: str) -> int:
            return Milter.CONTINUE

        @Milter.noreply
        def eoh(self) -> int:
            return Milter.CONTINUE

        @Milter.noreply
        def body(self, blk: bytes) -> int:
            return Milter.CONTINUE

        def eom(self) -> int:
            return Milter.CONTINUE

    return Template


def sample() -> type[Milter.Base]:
    """The callback shape of pymilter's ``sample.sampleMilter``."""

    class Sample(Milter.Base):
        @Milter.noreply
        def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
            return Milter.CONTINUE

        @Milter.noreply
        def hello(self, hostname: str) -> int:
            return Milter.CONTINUE

        @Milter.symlist("{auth_authen}")
        @Milter.noreply
        def envfrom(self, f: str, *params: str) -> int:
            return Milter.CONTINUE

        def envrcpt(self, to: str, *params: str) -> int:
            return Milter.CONTINUE

        @Milter.decode("bytes")
        def header(self, field: str, value: bytes) -> int:  # type: ignore[override]
            return Milter.CONTINUE

        def eoh(self) -> int:
            return Milter.CONTINUE

        def body(self, blk: bytes) -> int:
            return Milter.CONTINUE

        def eom(self) -> int:
            return Milter.CONTINUE

    return Sample
