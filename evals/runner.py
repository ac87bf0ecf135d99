"""Run evaluators over the store: select unscored request spans, judge them, write scores.

    >>> summary = run_evals("aperture.duckdb", blob_dir=Path("aperture-data/blobs"))  # doctest: +SKIP
    >>> summary.written                                                              # doctest: +SKIP
    412

Connections are short-lived (read, close, evaluate, then write in batches), so the gateway
can keep exporting spans to the same file while a long evaluation runs. Evaluation runs in
worker processes (reference-free OCR is CPU-bound); results are written with INSERT OR
IGNORE on (span_id, evaluator, evaluator_version), so re-runs and overlapping runs are
idempotent. The runner never raises because of a case: evaluator failures become
``not_evaluable`` scores with the reason.
"""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from opentelemetry.trace import TracerProvider
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from collector.queries.evals import record_scores
from collector.semconv import utc_now
from collector.store import open_store
from evals.base import Evaluator, Score, safe_evaluate
from evals.cases import PendingCase, select_pending
from evals.registry import all_evaluators, get
from evals.telemetry import emit_scores

Result = tuple[str, str, Score]  # (trace_id, span_id, score)


@dataclass
class RunSummary:
    """What one run did, per evaluator; ``rows()`` is ready for a table printer."""

    cases: int = 0
    written: int = 0
    retry_later: int = 0
    emitted: int = 0
    elapsed_s: float = 0.0
    counts: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, score: Score) -> None:
        c = self.counts.setdefault(score.name, Counter())
        if score.retryable:
            c["retry_later"] += 1
        elif score.status == "not_evaluable":
            c["not_evaluable"] += 1
        else:
            c["passed" if score.passed else "failed"] += 1

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "evaluator": name,
                "passed": c["passed"],
                "failed": c["failed"],
                "not_evaluable": c["not_evaluable"],
                "retry_later": c["retry_later"],
            }
            for name, c in sorted(self.counts.items())
        ]


def score_row(trace_id: str, span_id: str, score: Score, ts: datetime) -> dict[str, Any]:
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "evaluator": score.name,
        "evaluator_version": score.evaluator_version,
        "status": score.status,
        "score": score.value,
        "passed": score.passed,
        "explanation": score.explanation,
        "details": score.details,
        "ts": ts,
    }


def evaluate_case(evaluators: dict[str, Evaluator], pending: PendingCase) -> list[Result]:
    """Every pending evaluator on one case; never raises."""
    out: list[Result] = []
    for name in pending.evaluators:
        ev = evaluators.get(name)
        if ev is None:
            continue
        for score in safe_evaluate(ev, pending.case):
            out.append((pending.case.trace_id, pending.case.span_id, score))
    return out


_WORKER_EVALUATORS: dict[str, Evaluator] = {}


def _init_worker(evaluators: list[Evaluator]) -> None:
    _WORKER_EVALUATORS.clear()
    _WORKER_EVALUATORS.update({e.name: e for e in evaluators})


def _work(chunk: list[PendingCase]) -> list[Result]:
    return [r for p in chunk for r in evaluate_case(_WORKER_EVALUATORS, p)]


def _chunks(items: list[PendingCase], size: int) -> Iterator[list[PendingCase]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _resolve(evaluators: Sequence[Evaluator | str] | None) -> list[Evaluator]:
    if evaluators is None:
        return all_evaluators()
    out = [get(e) if isinstance(e, str) else e for e in evaluators]
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        raise ValueError(f"evaluator names must be unique, got {names}")
    return out


def _since(since: datetime | timedelta | None) -> datetime | None:
    if isinstance(since, timedelta):
        return utc_now() - since
    return since


def _results(
    evs: list[Evaluator], pending: list[PendingCase], workers: int, chunk_size: int
) -> Iterator[tuple[int, list[Result]]]:
    """(cases done, results) as they complete, inline or from worker processes."""
    if workers <= 1 or len(pending) <= chunk_size:
        table = {e.name: e for e in evs}
        for p in pending:
            yield 1, evaluate_case(table, p)
        return
    # fork keeps evaluators registered at run time (decorated functions) visible to workers.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    with ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=_init_worker, initargs=(evs,)
    ) as pool:
        futures = {pool.submit(_work, c): len(c) for c in _chunks(pending, chunk_size)}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def run_evals(
    db_path: str | Path,
    *,
    since: datetime | timedelta | None = None,
    evaluators: Sequence[Evaluator | str] | None = None,
    workers: int = 2,
    blob_dir: Path | None = None,
    progress: bool = True,
    tracer_provider: TracerProvider | None = None,
    limit: int | None = None,
    chunk_size: int = 8,
    write_batch: int = 500,
) -> RunSummary:
    """Score every request span not yet scored by each (evaluator, version).

    ``evaluators``: instances or registered names (default: all registered).
    ``blob_dir``: root of the content-addressed image store (needed for reference-free OCR).
    ``tracer_provider``: when given, each stored score is also emitted as a
    ``gen_ai.evaluation.result`` event (see :mod:`evals.telemetry`).
    """
    started = time.perf_counter()
    evs = _resolve(evaluators)
    summary = RunSummary()
    with open_store(db_path, read_only=True) as conn:
        pending = select_pending(conn, evs, since=_since(since), limit=limit, blob_dir=blob_dir)
    summary.cases = len(pending)
    buffer: list[Result] = []

    def flush() -> None:
        if not buffer:
            return
        ts = utc_now()
        rows = [score_row(t, s, sc, ts) for t, s, sc in buffer]
        summary.written += record_scores(db_path, rows)
        if tracer_provider is not None:
            summary.emitted += emit_scores(tracer_provider, buffer)
        buffer.clear()

    columns = (TextColumn("eval"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("eval", total=len(pending))
        for done, results in _results(evs, pending, max(1, workers), max(1, chunk_size)):
            for result in results:
                summary.add(result[2])
                if result[2].retryable:
                    summary.retry_later += 1
                else:
                    buffer.append(result)
            if len(buffer) >= write_batch:
                flush()
            bar.advance(task, done)
    flush()
    summary.elapsed_s = time.perf_counter() - started
    return summary
