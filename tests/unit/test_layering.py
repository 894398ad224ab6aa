"""The import direction of ARCHITECTURE.md, checked on the source (AST, no import):

- ``Milter/`` (the pymilter framework) never imports the application: not
  ``bmslib`` and not ``bms``;
- ``Milter/protocol/`` imports only the standard library and itself (sans-I/O:
  and not even the standard library's sockets, threads or logging setup).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPLICATION = ("bmslib", "bms")
IO_MODULES = ("socket", "threading", "asyncio", "selectors", "select", "logging.config",
              "subprocess", "multiprocessing")


def imports(path: Path, package: str) -> Iterator[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``path``, a module
    of ``package`` (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    parts = package.split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[: len(parts) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield node.lineno, name
            if not node.module:
                for alias in node.names:
                    yield node.lineno, f"{name}.{alias.name}"


def modules(top: Path, package: str) -> Iterator[tuple[Path, str]]:
    """Each ``.py`` file below ``top`` with the package it belongs to."""
    for path in sorted(top.rglob("*.py")):
        rel = path.relative_to(top).with_suffix("")
        pkg_parts = [package, *rel.parts[:-1]]
        yield path, ".".join(pkg_parts)


def violations(top: Path, package: str = "Milter") -> list[str]:
    found = []
    for path, pkg in modules(top, package):
        in_protocol = pkg == f"{package}.protocol" or pkg.startswith(f"{package}.protocol.")
        for line, name in imports(path, pkg):
            head = name.split(".")[0]
            where = f"{path.relative_to(top.parent)}:{line}"
            if head in APPLICATION:
                found.append(f"{where}: the framework imports the application ({name})")
            if in_protocol:
                if name.startswith(f"{package}.protocol") or name == "__future__":
                    continue
                if head not in sys.stdlib_module_names:
                    found.append(f"{where}: Milter/protocol imports {name} "
                                 "(standard library only)")
                elif any(name == m or name.startswith(m + ".") for m in IO_MODULES):
                    found.append(f"{where}: Milter/protocol imports {name} (sans-I/O)")
    return found


def test_the_framework_never_imports_the_application() -> None:
    assert violations(ROOT / "Milter") == []


def test_the_top_level_milter_module_is_framework_too() -> None:
    path = ROOT / "milter.py"
    if not path.exists():
        pytest.skip("no top-level milter.py")
    bad = [name for _line, name in imports(path, "") if name.split(".")[0] in APPLICATION]
    assert bad == []


@pytest.mark.parametrize(("where", "source", "complaint"), [
    ("server.py", "from bmslib import metrics\n", "imports the application (bmslib)"),
    ("utils.py", "import bmslib.config as c\n", "imports the application (bmslib.config)"),
    ("cache.py", "import bms\n", "imports the application (bms)"),
    ("protocol/codec.py", "from ..server import MilterServer\n", "standard library only"),
    ("protocol/codec.py", "import dns.resolver\n", "standard library only"),
    ("protocol/codec.py", "import socket\n", "sans-I/O"),
    ("protocol/codec.py", "from threading import Lock\n", "sans-I/O"),
])
def test_the_checker_finds_each_kind_of_violation(tmp_path: Path, where: str, source: str,
                                                  complaint: str) -> None:
    top = tmp_path / "Milter"
    (top / "protocol").mkdir(parents=True)
    (top / "__init__.py").write_text("from . import lowlevel\n")
    (top / "protocol" / "__init__.py").write_text("from .codec import x\nimport struct\n")
    assert violations(top) == []
    (top / where).write_text(source)
    found = violations(top)
    assert len(found) == 1 and complaint in found[0], found
