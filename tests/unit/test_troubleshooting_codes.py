"""Every error code the gateway can answer with is explained in docs/troubleshooting.md.

Codes are found in the source, not listed by hand: class attributes ``code = "..."``, keyword
arguments ``code="..."``, the ``{...}[kind]`` tables assigned to ``code``, and string returns
of functions whose name mentions ``code`` (e.g. ``_code_for(status)``). The gateway's own
``/admin`` routes live in ``aperture/``, so that package is read too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "troubleshooting.md"
SOURCES = (ROOT / "router", ROOT / "aperture")
_CODE = re.compile(r"^[a-z][a-z0-9_]*[a-z0-9]$")  # drops HTTP statuses like code="200"


def _strings(node: ast.AST | None) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Dict):
        return [v for value in node.value.values for v in _strings(value)]
    return []


def codes_in_source(source: str) -> set[str]:
    """Error codes a module sets (see the module docstring for the forms recognised)."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "code" for t in targets):
                found += _strings(node.value)
        elif isinstance(node, ast.Call):
            found += [s for kw in node.keywords if kw.arg == "code" for s in _strings(kw.value)]
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and "code" in node.name:
            found += [s for r in ast.walk(node) if isinstance(r, ast.Return) for s in _strings(r.value)]
    return {c for c in found if _CODE.match(c)}


def gateway_codes() -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for package in SOURCES:
        for path in sorted(package.rglob("*.py")):
            for code in codes_in_source(path.read_text(encoding="utf-8")):
                where.setdefault(code, []).append(str(path.relative_to(ROOT)))
    return where


def documented_codes() -> set[str]:
    """Codes in the first column of the page's tables."""
    return set(re.findall(r"^\| `([a-z0-9_]+)` \|", DOC.read_text(encoding="utf-8"), flags=re.M))


def test_every_gateway_error_code_is_documented() -> None:
    codes = gateway_codes()
    missing = {code: files for code, files in codes.items() if code not in documented_codes()}
    assert missing == {}


def test_the_page_documents_no_code_the_gateway_lacks() -> None:
    assert documented_codes() - set(gateway_codes()) == set()


def test_the_scan_finds_the_codes_it_should() -> None:
    codes = gateway_codes()
    # one of each form: class attribute, annotated default, keyword, dict table, function return
    for code in ("image_too_large", "internal_error", "max_cost_exceeded", "upstream_timeout", "upstream_rate_limited"):
        assert code in codes, code
    assert "200" not in codes


@pytest.mark.parametrize(
    ("source", "codes"),
    [
        ('class E(Base):\n    code = "thing_failed"\n    status = 400\n', {"thing_failed"}),
        ('class E(Base):\n    code: str = "base_error"\n', {"base_error"}),
        ('raise E("m", code="bad_header", param="x")\n', {"bad_header"}),
        ('code = {"a": "x_timeout", "b": "x_reset"}[kind]\n', {"x_timeout", "x_reset"}),
        ('def _code_for(s):\n    if s == 429:\n        return "too_fast"\n    return "other"\n', {"too_fast", "other"}),
        ('metrics.labels(code="200", model=m)\nraise E("m", provider_code="upstream_own")\n', set()),
        ('def f():\n    return "not_a_code"\n', set()),
    ],
)
def test_code_extraction(source: str, codes: set[str]) -> None:
    assert codes_in_source(source) == codes


def statuses_in_source(source: str) -> dict[str, int]:
    """Codes whose HTTP status is written next to them: a class setting both ``code`` and
    ``status``, or a call passing both ``code=`` and ``status=`` as literals."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(source)):
        pairs: dict[str, Any] = {}
        if isinstance(node, ast.ClassDef):
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                    pairs[stmt.targets[0].id] = stmt.value
        elif isinstance(node, ast.Call):
            pairs = {kw.arg: kw.value for kw in node.keywords if kw.arg}
        code, status = pairs.get("code"), pairs.get("status")
        if isinstance(code, ast.Constant) and isinstance(status, ast.Constant) and isinstance(status.value, int):
            found[str(code.value)] = status.value
    return found


def documented_statuses() -> dict[str, str]:
    return dict(re.findall(r"^\| `([a-z0-9_]+)` \| ([^|]+) \|", DOC.read_text(encoding="utf-8"), flags=re.M))


def test_the_page_states_the_status_the_code_answers_with() -> None:
    documented = documented_statuses()
    wrong = {}
    for package in SOURCES:
        for path in sorted(package.rglob("*.py")):
            for code, status in statuses_in_source(path.read_text(encoding="utf-8")).items():
                if code in documented and not documented[code].strip().startswith(str(status)):
                    wrong[code] = (status, documented[code].strip(), str(path.relative_to(ROOT)))
    assert wrong == {}


def test_the_status_scan_finds_the_forms_it_should() -> None:
    assert statuses_in_source('class E(B):\n    status = 413\n    code = "too_big"\n') == {"too_big": 413}
    assert statuses_in_source('raise E("m", code="gone", status=410)\n') == {"gone": 410}
    assert statuses_in_source('raise E("m", code="x_y")\n') == {}


def test_every_documented_row_has_status_cause_and_fix() -> None:
    rows = re.findall(r"^\| `[a-z0-9_]+` \|(.*)$", DOC.read_text(encoding="utf-8"), flags=re.M)
    for row in rows:
        cells = [c.strip() for c in row.rstrip("|").split("|")]
        assert len(cells) == 3 and all(cells), row
        assert re.match(r"^\d{3}\b", cells[0]), row
