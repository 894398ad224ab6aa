"""Serve a milter class with ``Milter.runmilter``, under whichever framework
the interpreter imports as ``Milter`` (ours in .venv, pymilter in .venv-pymilter):

    python tests/milters/serve.py compat_milter:CompatMilter inet:PORT@127.0.0.1

Both frameworks stop gracefully on SIGTERM (libmilter handles it itself).
"""

from __future__ import annotations

import importlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import Milter


def main() -> None:
    target, spec = sys.argv[1], sys.argv[2]
    module, _, name = target.partition(":")
    Milter.factory = getattr(importlib.import_module(module), name)
    Milter.runmilter("compat", spec, 60)


if __name__ == "__main__":
    main()
