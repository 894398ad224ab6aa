"""Serve dkimpy-milter or spf-engine's pyspf-milter under whichever framework
the interpreter imports as ``Milter``, asking DNS of NSD only:

    python serve_pypi.py dkimpy-milter CONFIG NSD_PORT
    python serve_pypi.py pyspf-milter CONFIG NSD_PORT

Both programs (and dkimpy, pyspf under them) resolve through dnspython's
module-level resolver, which this points at 127.0.0.1:NSD_PORT before the
program's own ``main`` runs with ``sys.argv = [name, CONFIG]``.  Their
syslog lines go to stderr instead (the test bed has no syslogd; the log
file of the test keeps them): the same for both frameworks.  The first
line of output names the ``Milter`` package in use.
"""

from __future__ import annotations

import importlib
import sys
import syslog
from typing import Any

import dns.resolver

import Milter

MAINS = {"dkimpy-milter": "dkimpy_milter:main", "pyspf-milter": "spf_engine.milter_spf:main"}


def _log(*args: Any) -> None:
    print(f"syslog: {args[-1]}", file=sys.stderr, flush=True)


def _openlog(*args: Any) -> None:
    pass


def main() -> None:
    name, config, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.lifetime = resolver.timeout = 3.0
    dns.resolver.default_resolver = resolver
    setattr(syslog, "syslog", _log)  # noqa: B010 - a module's function replaced
    setattr(syslog, "openlog", _openlog)  # noqa: B010
    print(f"Milter: {Milter.__file__}", file=sys.stderr, flush=True)
    module_name, _, function = MAINS[name].partition(":")
    module: Any = importlib.import_module(module_name)
    sys.argv = [name, config]
    getattr(module, function)()


if __name__ == "__main__":
    main()
