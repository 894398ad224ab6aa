"""pymilter's own test modules, run on ``Milter``: 1.0.5's ``testsample``,
``testmime`` and ``testutils`` and 1.0's ``testgrey`` (each module's
``suite()``, doctests included) with this checkout first on ``sys.path`` and
pymilter's ``Milter`` package deleted.

pymilter's ``test.py`` also names ``testcfg`` and ``testpolicy``, which no
pymilter sdist on PyPI ships (0.9.8 to 1.0.5 checked; they are only in its
git repository, out of reach here); their modules are covered by
tests/unit/test_pymilter_helpers_*.  ``testgrey``'s ``setUp`` removes
``test.db`` without checking that it exists (pymilter's own runs leave one
behind), so the runner creates it first.

``testsample`` imports ``template`` (1.0.4's ``milter-template.py``, see
conftest), whose ``log`` writes to a queue of four that only its ``main()``
drains: the runner starts that drain too, or the test would block.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from testbed.bmsd import REPO

RUNNER = """\
import sys, unittest
import Milter, milter
assert Milter.__file__.startswith({repo!r}), Milter.__file__
assert milter.__file__.startswith({repo!r}), milter.__file__
open("test.db", "a").close()  # testgrey's setUp removes it unconditionally
import {module}
if "template" in sys.modules:
    # milter-template.py logs through a bounded queue that its main() drains
    # with a background process; start that drain as main() does.
    import template
    drain = template.Thread(target=template.background)
    drain.start()
result = unittest.TextTestRunner(stream=sys.stdout, verbosity=2).run({module}.suite())
if "template" in sys.modules:
    template.logq.put(None)
    drain.join()
print("RESULT", result.testsRun, len(result.failures), len(result.errors),
      len(result.unexpectedSuccesses), len(result.skipped))
sys.exit(0 if result.wasSuccessful() else 1)
"""

#: Test count per module (so a module that silently ran nothing fails).
EXPECTED = {"testsample": 6, "testmime": 13, "testutils": 4, "testgrey": 1}


def run_module(tree: Path, module: str) -> subprocess.CompletedProcess[str]:
    code = RUNNER.format(repo=str(REPO), module=module)
    return subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True,
                          text=True, timeout=300, check=False,
                          env={"PYTHONPATH": f"{REPO}:{tree}", "PATH": "/usr/bin:/bin",
                               "HOME": str(tree), "LANG": "C.UTF-8"})


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_pymilter_module_passes(pymilter_tree: Path, module: str) -> None:
    proc = run_module(pymilter_tree, module)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    summary = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert summary, output[-3000:]
    ran, failures, errors, unexpected, skipped = map(int, summary[-1].split()[1:])
    assert (failures, errors, unexpected, skipped) == (0, 0, 0, 0), output[-6000:]
    # testutils adds the doctests of Milter.utils, Milter.dynip and Milter.pyip6.
    assert ran >= EXPECTED[module], output[-3000:]
