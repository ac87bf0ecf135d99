"""The store's inputs and reports: ``workload generate``, ``references load``, ``eval``,
``clusters``, ``spend`` and ``guardrails report``. Plain functions; ``aperture.cli`` registers them as commands (in
the order ``aperture --help`` lists them), so names and options are those below.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path

import typer

from aperture.cli_support import (
    DbOption,
    FormatOption,
    OutputFormat,
    SpendFormat,
    console,
    emit,
    existing_store,
    fail,
    progress_bar,
    rows_table,
)
from aperture.wiring import default_db_path


class SpendBy(StrEnum):
    model = "model"
    team = "team"
    day = "day"
    detail = "detail"
    size = "size"


def workload_generate(
    n: int = typer.Option(100, "--n", help="How many images."),
    seed: int = typer.Option(0, help="Random seed (same seed, same workload)."),
    out: Path = typer.Option(..., "--out", help="Output directory (images/ and ground_truth.jsonl)."),
    workers: int = typer.Option(2, min=1, help="Worker processes (the files are identical for any number)."),
) -> None:
    """Generate a synthetic vision workload with exact ground truth."""
    from emulator.workload import generate_workload

    with progress_bar("generating", n) as update:
        done = [0]

        def step(k: int) -> None:
            done[0] += k
            update(done[0], None)

        records = generate_workload(n, seed, out, workers=workers, progress=step)
    kinds: dict[str, int] = {}
    for r in records:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    console.print(f"wrote {len(records)} images and {out / 'ground_truth.jsonl'}: {kinds}")


def references_load(file: Path = typer.Argument(..., help="Ground-truth JSONL (the workload generator's format)."), db: Path | None = DbOption) -> None:
    """Load ground truth into the store so evaluations can use it."""
    from evals.references import ReferenceFileError, load_reference_file

    try:
        count = load_reference_file(default_db_path(db), file)
    except (ReferenceFileError, FileNotFoundError) as exc:
        fail(str(exc))
        return
    console.print(f"loaded {count} references into {default_db_path(db)}")


def eval_(
    db: Path | None = DbOption,
    since: str | None = typer.Option(None, help="Only spans since this ISO time or duration (e.g. 24h)."),
    workers: int = typer.Option(2, help="Processes."),
    blob_dir: Path | None = typer.Option(None, help="Blob store root, for reference-free OCR."),
    format: OutputFormat = FormatOption,
) -> None:
    """Score the spans not yet scored by each evaluator version."""
    from aperture.wiring import otlp_from_env, telemetry_for
    from collector.spend import parse_since
    from evals.runner import run_evals

    path = existing_store(default_db_path(db))
    # Scores also go out as gen_ai.evaluation.result events linked to the evaluated spans.
    telemetry = telemetry_for("aperture-evals", path, otlp_from_env())
    try:
        summary = run_evals(path, since=parse_since(since) if since else None, workers=workers, blob_dir=blob_dir,
                            tracer_provider=telemetry.provider)
    finally:
        telemetry.shutdown()
    rows = summary.rows()
    emit(console, format, rows, lambda: rows_table(f"evaluations ({summary.cases} cases)", rows))


def clusters(
    db: Path | None = DbOption,
    since: str | None = typer.Option(None, help="Only failures since this ISO time or duration."),
    min_size: int = typer.Option(3, help="Smallest cluster reported."),
    format: OutputFormat = FormatOption,
) -> None:
    """Group failing scores into clusters with a label, a trend and a suggested routing fix."""
    from collector.spend import parse_since
    from evals.clusters import find_failure_clusters, write_clusters

    existing_store(default_db_path(db))
    found = find_failure_clusters(default_db_path(db), since=parse_since(since) if since else None, min_size=min_size)
    run_id = write_clusters(default_db_path(db), found)
    rows = [c.printable() for c in found]
    columns = ("evaluator", "label", "size", "trend", "suggested_fix", "examples")
    emit(console, format, {"run_id": run_id, "clusters": rows},
         lambda: rows_table(f"failure clusters (run {run_id})", rows, columns))


def spend(
    db: Path | None = DbOption,
    by: SpendBy = typer.Option(SpendBy.model, help="Group spend by this."),
    since: str | None = typer.Option(None, help="ISO time or duration (e.g. 7d)."),
    format: SpendFormat = typer.Option(SpendFormat.table, "--format", help="table, csv or json."),
    top: int = typer.Option(10, help="How many costly images to list."),
) -> None:
    """Spend and image counts, the costliest images, and detail that was not needed."""
    from collector.spend import spend_report, to_csv, to_json, to_tables
    from collector.store import open_store

    with open_store(existing_store(default_db_path(db)), read_only=True) as conn:
        report = spend_report(conn, by=by.value, since=since, top=top)
    if format is SpendFormat.csv:
        sys.stdout.write(to_csv(report))
    elif format is SpendFormat.json:
        sys.stdout.write(to_json(report) + "\n")
    else:
        for table in to_tables(report):
            console.print(table)


guardrails_app = typer.Typer(help="Image guardrails: what the detectors decided.", no_args_is_help=True)


@guardrails_app.command("report")
def guardrails_report(
    db: Path | None = DbOption,
    since: str | None = typer.Option(None, help="ISO time or duration (e.g. 7d)."),
    format: OutputFormat = FormatOption,
) -> None:
    """Guardrail verdicts by detector, team, action and mode (inline or shadow) over a period."""
    from collector.queries.guardrails import guardrail_report
    from collector.spend import parse_since
    from collector.store import open_store

    with open_store(existing_store(default_db_path(db)), read_only=True) as conn:
        rows = guardrail_report(conn, since=parse_since(since))
    columns = ("detector", "team", "action", "mode", "checked", "fired", "passed", "errors", "p50_ms", "p95_ms")
    emit(console, format, rows, lambda: rows_table("guardrail verdicts", rows, columns))
