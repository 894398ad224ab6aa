"""Fixtures of the DNS tier (not named tests/dns: with tests/ on sys.path that
would shadow dnspython): a real NSD with the shared test zone
(``testbed.nsd``); the tests are marked ``e2e`` and run only inside the
private network namespace (``scripts/lib.sh run_in_netns``, ``./test.sh``)."""

from __future__ import annotations

from testbed.pytest_plugin import *  # noqa: F403 - the e2e skip hook
