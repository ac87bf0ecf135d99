"""Modules stay small enough to read and functions short enough to follow.

No module over 400 lines and no function over 60 in the packages below (``benchmarks/`` is
exempt: a benchmark is one script). ``ALLOWED`` is the debt we know of, named so it stays
visible: an entry that no longer offends fails the test too, so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("router", "collector", "evals", "optimizer", "emulator", "aperture", "ocr")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

#: "path" for a module over the limit, "path:function" for a function; empty when none.
ALLOWED: frozenset[str] = frozenset()


def offenders(root: Path = ROOT) -> set[str]:
    found = set()
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            source = path.read_text(encoding="utf-8")
            if len(source.splitlines()) > MAX_MODULE_LINES:
                found.add(rel)
            for node in ast.walk(ast.parse(source, rel)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    assert node.end_lineno is not None
                    if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                        found.add(f"{rel}:{node.name}")
    return found


def test_no_module_or_function_over_the_limits() -> None:
    found = offenders()
    assert sorted(found - ALLOWED) == [], "split these along their ideas (STYLE.md)"
    assert sorted(ALLOWED - found) == [], "these are within the limits now: remove them from ALLOWED"


def test_the_check_sees_a_long_module_and_a_long_method(tmp_path: Path) -> None:
    (tmp_path / "evals").mkdir()
    short = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1))
    long = "\n".join(f"        x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "evals" / "a.py").write_text(f"def fine():\n{short}\n\n\nclass C:\n    async def slow(self):\n{long}\n")
    (tmp_path / "evals" / "b.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    (tmp_path / "evals" / "c.py").write_text("x = 1\n" * MAX_MODULE_LINES)
    assert offenders(tmp_path) == {"evals/a.py:slow", "evals/b.py"}
