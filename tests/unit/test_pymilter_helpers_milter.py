"""The top-level ``milter`` module: pymilter's C module's names, the same
objects as Milter.lowlevel's (one registration for both spellings).  That
the names are exactly pymilter's is checked against real pymilter in
tests/conformance/test_milter_module.py."""

from __future__ import annotations

import Milter
import milter
from Milter import lowlevel


def test_every_name_is_shared_with_milter_and_lowlevel() -> None:
    assert len(milter.__all__) == 75
    for name in milter.__all__:
        assert getattr(milter, name) is getattr(lowlevel, name), name
        if name != "NOREPLY":  # importing Milter.test rebinds Milter.NOREPLY, as in pymilter
            assert getattr(Milter, name) is getattr(milter, name), name


def test_star_import_gives_the_names() -> None:
    namespace: dict[str, object] = {}
    exec("from milter import *", namespace)
    assert {n for n in namespace if n != "__builtins__"} == set(milter.__all__)


def test_setter_registers_for_both_spellings() -> None:
    def connect(ctx: object, *args: object) -> int:
        return milter.CONTINUE

    previous = milter.set_connect_callback(connect)
    try:
        assert lowlevel.registration().callbacks["connect"] is connect
    finally:
        milter.set_connect_callback(previous)


def test_error_and_constants() -> None:
    assert issubclass(milter.error, Exception)
    assert (milter.CONTINUE, milter.REJECT, milter.DISCARD, milter.ACCEPT,
            milter.TEMPFAIL) == (0, 1, 2, 3, 4)
    assert milter.getversion()[0] >= 1
