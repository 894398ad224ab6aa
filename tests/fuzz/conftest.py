"""Fixtures of the fuzz tier: the e2e skip hook (the tier runs in the private
network namespace, SPF against the session NSD of tests/conftest.py)."""

from __future__ import annotations

from testbed.pytest_plugin import *  # noqa: F403 - the e2e skip hook
