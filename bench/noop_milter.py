"""The no-op milter of the benchmark: one file, run unchanged on both frameworks.

``import Milter`` resolves to whichever framework the interpreter has: our
``Milter`` in ``.venv`` (installed editable), pymilter (libmilter underneath)
in ``.venv-pymilter``.  Run it by path, never with the repository root as the
working directory on ``sys.path`` (``python -c``), or pymilter's interpreter
would import our package instead.

Every message callback is overridden and returns CONTINUE, so both frameworks
negotiate the same protocol: the MTA sends every stage and waits for every
reply.

    python bench/noop_milter.py SOCKET [--workers N] [--eom-only]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import Milter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from milters import shapes

# The shapes are shared with the tests (tests/milters/shapes.py).
NoOp = shapes.noop()
EomOnly = shapes.eom_only()


def framework() -> str:
    """``pymilter X`` or ``bms Milter``, from what ``import Milter`` found (our
    package has ``Milter.server``; pymilter's has the C module ``milter``)."""
    if importlib.util.find_spec("Milter.server") is not None:
        return f"bms Milter ({Milter.__file__})"
    import milter  # type: ignore[import-not-found, unused-ignore]  # pymilter's C module

    return f"pymilter {getattr(Milter, '__version__', '?')} (libmilter, {milter.__file__})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("socket", help="libmilter socket spec: inet:PORT@HOST or unix:/path")
    parser.add_argument("--eom-only", action="store_true",
                        help="serve EomOnly instead of NoOp (stages negotiated away)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (our Milter only: Milter.setworkers)")
    args = parser.parse_args(argv)
    if args.workers != 1:
        if not hasattr(Milter, "setworkers"):
            parser.error("--workers needs our Milter (pymilter has no setworkers)")
        Milter.setworkers(args.workers)
    factory = EomOnly if args.eom_only else NoOp
    print(f"noop milter: {framework()} on {args.socket}, workers={args.workers}, "
          f"{factory.__name__}", file=sys.stderr, flush=True)
    Milter.factory = factory
    Milter.runmilter("noop", args.socket, timeout=600)


if __name__ == "__main__":
    main()
