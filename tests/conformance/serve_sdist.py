"""Serve one of pymilter's example milters (``sample.py``; ``template.py``)
under whichever framework the interpreter imports as ``Milter``:

    python serve_sdist.py sample:sampleMilter FLAGS inet:PORT@127.0.0.1

FLAGS is the sum of action flags the example's own ``main`` sets.  Like
``template.main``, the log-queue drain runs beside the milter when the
module has one (its ``log`` blocks otherwise).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import Milter


def main() -> None:
    target, flags, spec = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    module_name, _, name = target.partition(":")
    module: Any = importlib.import_module(module_name)
    drain = None
    if hasattr(module, "background") and hasattr(module, "logq"):
        drain = module.Thread(target=module.background)
        drain.start()
    Milter.factory = getattr(module, name)
    Milter.set_flags(flags)
    try:
        Milter.runmilter("sdist", spec, 60)
    finally:
        if drain is not None:
            module.logq.put(None)
            drain.join()


if __name__ == "__main__":
    main()
