"""Only the collector writes SQL against the store: no other package holds SQL text.

Every string literal (f-strings included, their placeholders blanked) outside docstrings in
the packages below is matched against the shapes of SQL statements; a hit names the file and
line. Docstrings may talk about SQL; notebooks and tests may hold it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("router", "evals", "optimizer", "emulator", "aperture")

#: Statement shapes: an upper-case keyword (as every query here is written, and prose is not)
#: and the clause that makes it a statement.
SQL = re.compile(
    r"""\b(?:
        SELECT\b[\s\S]*?\bFROM\s+[\w"({$]
      | INSERT\s+(?:OR\s+\w+\s+)?INTO\s+[\w"]
      | UPDATE\s+[\w"]+\s+SET\b
      | DELETE\s+FROM\s+[\w"]
      | CREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP(?:ORARY)?\s+)?(?:TABLE|VIEW|INDEX|SEQUENCE)\b
      | ALTER\s+TABLE\b
      | DROP\s+(?:TABLE|VIEW|INDEX)\b
      | WITH\s+\w+\s+AS\s*\(
    )""",
    re.VERBOSE,
)


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string nodes that are docstrings."""
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _literals(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string literal that is not a docstring; an f-string's
    placeholders become ``{}`` so that the statement around them still reads as SQL."""
    skip = _docstrings(tree)
    inner: set[int] = set()
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                inner.add(id(value))
                parts.append(value.value if isinstance(value, ast.Constant) else "{}")
            out.append((node.lineno, "".join(str(p) for p in parts)))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in skip and id(node) not in inner):
            out.append((node.lineno, node.value))
    return out


def sql_hits(source: str) -> list[tuple[int, str]]:
    """(line, statement start) of every SQL-shaped literal in ``source``."""
    hits = []
    for line, text in _literals(ast.parse(source)):
        match = SQL.search(text)
        if match:
            hits.append((line + text.count("\n", 0, match.start()), " ".join(match.group(0).split())[:60]))
    return sorted(hits)


def test_no_sql_outside_the_collector() -> None:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, text in sql_hits(path.read_text(encoding="utf-8")):
                found.append(f"{path.relative_to(ROOT)}:{line}: {text}")
    assert not found, "SQL outside collector/ (move it to collector/queries/):\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        'Q = "SELECT a FROM t"',
        'Q = """\nWITH x AS (SELECT 1)\nSELECT * FROM x"""',
        "Q = f'SELECT {col} FROM image_spans WHERE ts >= ?'",
        'conn.execute("INSERT OR IGNORE INTO eval_scores BY NAME SELECT * FROM b")',
        'conn.execute("UPDATE rollouts SET reason = ?")',
        'conn.execute("DELETE FROM spans")',
        'conn.execute("CREATE TABLE IF NOT EXISTS t (a INT)")',
        'Q = ("SELECT span_id, ts "\n     "FROM request_spans")',
    ],
)
def test_sql_shapes_are_found(source: str) -> None:
    assert sql_hits(source)


@pytest.mark.parametrize(
    "source",
    [
        '"""Run evaluators: select unscored request spans, written with INSERT OR\nIGNORE."""',
        'def f():\n    """Select the rows from the store and update them."""\n',
        'msg = "select a route from the list"',
        'log.info("deleted %d blobs from %s", n, root)',
        'HELP = "create a table of spend"',
        'Q = "Select FROM the menu"',
    ],
)
def test_prose_is_not_sql(source: str) -> None:
    assert not sql_hits(source)


def test_a_hit_names_its_line() -> None:
    assert sql_hits('x = 1\nQ = """\n  pick\n  SELECT a FROM t"""') == [(4, "SELECT a FROM t")]
