"""Fixtures shared by several tiers. The DNS server is defined once here: a
session fixture imported into two tier conftests would be two fixtures, and the
second NSD would find 127.0.0.1:5353 taken by the first."""

from __future__ import annotations

from testbed.nsd import nsd  # noqa: F401 - the session fixture (NSD on 127.0.0.1:5353)
