"""The dynamic-PTR heuristic bms uses for the DYN connection class (SPEC §4).
It lives in the framework, :mod:`Milter.dynip` (pymilter's module of that
name), so both bms and pymilter-style milters share one implementation."""

from Milter.dynip import is_dynamic

__all__ = ["is_dynamic"]
