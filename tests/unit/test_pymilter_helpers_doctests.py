"""The doctests of pymilter's helper modules (pymilter's testutils runs those
of Milter.utils, Milter.dynip and Milter.pyip6; we run all of ours)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["Milter.utils", "Milter.dynip", "Milter.pyip6", "Milter.sgmllib", "Milter.unsign",
           "Milter.greylist"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests_pass(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0
    assert result.failed == 0
