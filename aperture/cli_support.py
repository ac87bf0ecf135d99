"""Conventions every ``aperture`` command shares: output formats, one-line errors, exit codes,
progress bars.

Errors: a command never ends in a traceback. :class:`OneLineErrors` is the root click group; it
turns any exception a command lets out into ``error: <one line>`` on stderr and exit code
:data:`EXIT_ERROR` (``APERTURE_DEBUG=1`` re-raises, for a traceback when one is wanted). A
missing optional package names the extra that brings it.

Exit codes: 0 success; 1 a check failed (``rules validate``); 2 a usage or runtime error;
``guard --once`` reports its decision as 0 (promote or hold), 10 (extend), 20 (rollback).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_ERROR = 2
GUARD_EXIT = {"promote": 0, "hold": 0, "idle": 0, "extend": 10, "rollback": 20}

# Optional packages and the extra that installs them (pyproject [project.optional-dependencies]).
EXTRA_OF = {
    "optuna": "optimizer", "sklearn": "optimizer", "scipy": "optimizer", "threadpoolctl": "optimizer",
    "matplotlib": "optimizer", "rapidocr": "emulator", "onnxruntime": "emulator", "cv2": "emulator",
    "nbclient": "notebooks", "nbformat": "notebooks", "ipykernel": "notebooks",
}

err = Console(stderr=True)
console = Console()

DbOption = typer.Option(None, "--db", help="DuckDB store (env APERTURE_DB, default ./aperture.duckdb).")
ConfigOption = typer.Option(Path("examples/emulated.yaml"), "--config", "-c", help="Gateway configuration file.")


class OutputFormat(StrEnum):
    table = "table"
    json = "json"


class SpendFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


FormatOption = typer.Option(OutputFormat.table, "--format", help="table for people, json for scripts.")


def one_line(exc: BaseException) -> str:
    """An exception as one line: a missing optional package names its extra; multi-line messages
    (pydantic's validation errors) are joined."""
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        root = exc.name.split(".")[0]
        extra = EXTRA_OF.get(root)
        if extra:
            return f"this command needs {root!r}: pip install 'aperture-gateway[{extra}]'"
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"no such file: {exc.filename}"
    errors = getattr(exc, "errors", None)
    if type(exc).__name__ == "ValidationError" and callable(errors):  # pydantic: config problems
        problems = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in errors()]
        return "invalid configuration: " + "; ".join(problems)
    return collapse(str(exc).strip() or type(exc).__name__)


def collapse(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


class OneLineErrors(TyperGroup):
    """Root group: whatever a command raises ends as one line and a non-zero exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            # click's own exits and usage errors (typer vendors click, so match by module)
            if type(exc).__module__.startswith(("click", "typer")) or os.environ.get("APERTURE_DEBUG"):
                raise
            err.print(f"[red]error:[/red] {escape(one_line(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_ERROR) from None


def require_extra(*modules: str) -> None:
    """Fail in one line, naming the extra, when an optional package is not installed."""
    import importlib.util

    for module in modules:
        if importlib.util.find_spec(module) is None:
            fail(one_line(ModuleNotFoundError(f"No module named {module!r}", name=module)))


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(collapse(message))}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def existing_store(path: Path) -> Path:
    """A store a reading command needs: absent, the error says where it looked and what writes it."""
    if not path.exists():
        fail(f"no store at {path.absolute()}: run `aperture serve` (it writes ./aperture.duckdb) "
             "or pass --db / set APERTURE_DB")
    return path


def emit(console: Console, fmt: OutputFormat, data: Any, table: Callable[[], Table | str]) -> None:
    """JSON on stdout for scripts (one document), or the human rendering."""
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(data, default=str) + "\n")
        return
    console.print(table())


def rows_table(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> Table:
    table = Table(title=title)
    cols = list(columns or (rows[0].keys() if rows else []))
    for col in cols:
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(row.get(c, "")) for c in cols))
    return table


@contextlib.contextmanager
def progress_bar(label: str, total: int | None, *, enabled: bool = True,
                 console: Console | None = None) -> Iterator[Callable[[int, int | None], None]]:
    """A rich progress bar on stderr; yields ``update(done, total)`` for library progress callbacks."""
    if not enabled:

        def ignore(done: int, total: int | None = None) -> None:
            return None

        yield ignore
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console or err, transient=True) as bar:
        task = bar.add_task(label, total=total)

        def update(done: int, total: int | None = None) -> None:
            if total is not None:
                bar.update(task, total=total)
            bar.update(task, completed=done)

        yield update
