"""Query functions behind the spend and routing-loop notebooks: the store in, polars out.

Each function takes an open DuckDB connection or a store path (opened read-only for the
call) and returns a polars DataFrame, empty (with its columns) when the table is, so a
notebook can print a clear message instead of crashing. Grouping and savings arithmetic follow
``aperture spend``: the spend totals, costliest images and detail-not-needed rows are the
queries of ``collector.queries.spend`` that ``collector.spend.spend_report`` also runs, so
notebook and CLI agree to the cent (the unit tests compare the two).

Example::

    df = spend_by("demo-out/aperture.duckdb", "team")
    waste = unneeded_detail("demo-out/aperture.duckdb")
    front = pareto_front(optimizer_trials("demo-out/optuna.db"))
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from collector.queries.spend import (
    IMAGE_COLUMNS,
    SIZE_BUCKET,
    DetailRule,
    costliest_images,
    group_totals,
    unneeded_detail_images,
)
from collector.schema import TABLES
from collector.spend import parse_since
from collector.store import StoreNotFoundError, connect, fetch_df, open_store

#: Group key per ``by`` for the per-image quantiles: text, "unknown" for a missing value (the
#: spend totals' rule, ``collector.queries.spend``).
GROUPINGS: dict[str, str] = {
    "model": "coalesce(model, 'unknown')",
    "team": "coalesce(team, 'unknown')",
    "day": "coalesce(strftime(ts, '%Y-%m-%d'), 'unknown')",
    "detail": "coalesce(detail, 'unknown')",
    "size": SIZE_BUCKET,
}

Source = duckdb.DuckDBPyConnection | str | Path
Since = str | datetime | date | timedelta | None

__all__ = [
    "cost_quantiles",
    "eval_scores_by_route",
    "failure_clusters_latest",
    "image_costs",
    "notebook_paths",
    "open_read_only",
    "optimizer_trials",
    "pareto_front",
    "pareto_indices",
    "rollout_timeline",
    "spend_by",
    "table_counts",
    "tokens_estimated_vs_billed",
    "top_costly_images",
    "traffic_by_ruleset",
    "unneeded_detail",
]


DEFAULT_STORE = Path("demo-out/aperture.duckdb")
DEFAULT_STUDY_STORAGE = Path("demo-out/optuna.db")


def notebook_paths(environ: Mapping[str, str], cwd: Path) -> tuple[Path, str]:
    """(store, optimizer study storage) for a notebook: ``APERTURE_DB`` / ``APERTURE_OPTUNA_DB``
    when set, else what ``make demo`` writes, looked up from ``cwd`` and, since Jupyter starts
    notebooks inside ``notebooks/``, from its parent too."""

    def pick(var: str, default: Path) -> str:
        if environ.get(var):
            return environ[var]  # a path or an Optuna storage URL: kept as given
        for base in (cwd, cwd.parent):
            if (base / default).exists():
                return str(base / default)
        return str(cwd / default)

    return Path(pick("APERTURE_DB", DEFAULT_STORE)), pick(
        "APERTURE_OPTUNA_DB", DEFAULT_STUDY_STORAGE
    )


def open_read_only(path: str | Path) -> tuple[duckdb.DuckDBPyConnection, str | None]:
    """A read-only connection to the store, or, when the file is missing, an empty in-memory
    store with the same tables plus a message saying so: notebooks then print "no data"
    for every section instead of failing on the first cell."""
    try:
        return connect(path, read_only=True), None
    except StoreNotFoundError:
        message = f"No store at {str(path)!r}: run `make demo` or set APERTURE_DB. Showing an empty store."
        return connect(":memory:"), message


@contextmanager
def _connection(source: Source) -> Iterator[duckdb.DuckDBPyConnection]:
    if isinstance(source, duckdb.DuckDBPyConnection):
        yield source
        return
    with open_store(source, read_only=True) as conn:
        yield conn


def _query(source: Source, sql: str, params: list[Any] | None = None) -> pl.DataFrame:
    with _connection(source) as conn:
        return fetch_df(conn, sql, params or [])


def _where(since: Since, column: str = "ts") -> tuple[str, list[Any]]:
    start = parse_since(since)
    return (f"WHERE {column} >= ?", [start]) if start else ("WHERE true", [])


def table_counts(source: Source) -> pl.DataFrame:
    """Rows per store table (``table``, ``rows``): what a notebook can show at all."""
    with _connection(source) as conn:
        counts = [(t, conn.execute(f'SELECT count(*) FROM "{t}"').fetchall()[0][0]) for t in TABLES]
    return pl.DataFrame(counts, schema={"table": pl.String, "rows": pl.Int64}, orient="row")


def spend_by(source: Source, by: str = "model", since: Since = None) -> pl.DataFrame:
    """Image spend grouped by ``model``, ``team``, ``day``, ``detail`` or ``size`` (long-side bucket).

    Columns: key, spend_usd, share, images, tokens_estimated, tokens_billed; costliest first
    (``collector.queries.spend.group_totals``, as ``aperture spend``), except ``day``, which
    is chronological for plotting.
    """
    with _connection(source) as conn:
        groups = group_totals(conn, by, parse_since(since), DetailRule())
    if by == "day":
        groups = sorted(groups, key=lambda g: g.key)
    total = sum(g.spend_usd for g in groups)
    return pl.DataFrame(
        [(g.key, g.spend_usd, g.spend_usd / total if total else 0.0, g.images, g.tokens_estimated,
          g.tokens_billed) for g in groups],
        schema={"key": pl.String, "spend_usd": pl.Float64, "share": pl.Float64, "images": pl.Int64,
                "tokens_estimated": pl.Int64, "tokens_billed": pl.Int64},
        orient="row",
    )


def image_costs(source: Source, since: Since = None) -> pl.DataFrame:
    """One row per billed image (model, detail, tokens, cost_usd): the per-image distribution."""
    where, params = _where(since)
    return _query(
        source,
        f"SELECT {IMAGE_COLUMNS} FROM image_spans {where} AND cost_usd IS NOT NULL ORDER BY ts",
        params,
    )


def cost_quantiles(source: Source, by: str = "model", since: Since = None) -> pl.DataFrame:
    """Per-image cost quantiles (p50, p90, p99, max, mean) per group, costliest median first."""
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {', '.join(GROUPINGS)}; got {by!r}")
    where, params = _where(since)
    return _query(
        source,
        f"SELECT {GROUPINGS[by]} AS key, count(*) AS images, "
        "quantile_cont(cost_usd, 0.5) AS p50_usd, quantile_cont(cost_usd, 0.9) AS p90_usd, "
        "quantile_cont(cost_usd, 0.99) AS p99_usd, max(cost_usd) AS max_usd, avg(cost_usd) AS mean_usd "
        f"FROM image_spans {where} AND cost_usd IS NOT NULL GROUP BY key "
        "ORDER BY p50_usd DESC, key",
        params,
    )


def top_costly_images(source: Source, n: int = 10, since: Since = None) -> pl.DataFrame:
    """The ``n`` most expensive images, with their size and detail (equal cost by span id)."""
    if n < 0:
        raise ValueError("n must be >= 0")
    return _query(source, *costliest_images(parse_since(since), n))


def unneeded_detail(
    source: Source,
    *,
    text_height_px: float = 20.0,
    small_long_side_px: int = 512,
    since: Since = None,
) -> pl.DataFrame:
    """Images sent at ``high``/``auto`` detail that low detail would have served.

    Large text (``text_height_px`` ≥ threshold) reads fine at low detail, and an image whose
    width and height are ≤ ``small_long_side_px`` loses nothing; ``savings_usd`` is
    ``(tokens_billed − tokens_low_estimate) × the row's cost per token``, never negative.
    ``reason`` is ``large_text``, ``small_image`` or ``large_text+small_image``. The rule is
    ``collector.queries.spend``'s, the one ``aperture spend`` counts with.
    """
    rule = DetailRule(text_height_px, small_long_side_px)
    return _query(source, *unneeded_detail_images(parse_since(since), rule))


def tokens_estimated_vs_billed(source: Source, since: Since = None) -> pl.DataFrame:
    """Per model: summed estimated vs billed image tokens, their ratio and mean absolute error %."""
    where, params = _where(since)
    return _query(
        source,
        "SELECT coalesce(model, 'unknown') AS model, count(*) AS images, "
        "sum(tokens_estimated)::BIGINT AS tokens_estimated, sum(tokens_billed)::BIGINT AS tokens_billed, "
        "sum(tokens_billed) / nullif(sum(tokens_estimated), 0) AS billed_over_estimated, "
        "avg(abs(tokens_billed - tokens_estimated) / nullif(tokens_billed, 0)) * 100 AS mean_abs_error_pct "
        f"FROM image_spans {where} AND tokens_billed IS NOT NULL AND tokens_estimated IS NOT NULL "
        "GROUP BY 1 ORDER BY 1",
        params,
    )


def eval_scores_by_route(
    source: Source, evaluator: str | None = None, since: Since = None
) -> pl.DataFrame:
    """Evaluation results per route (``request_spans.route``, e.g. ``gpt-4o:high``) and evaluator.

    Columns: route, evaluator, requests, scored, not_evaluable, mean_score, pass_rate,
    mean_cost_usd (billed cost of the scored requests).
    """
    where, params = _where(since, "e.ts")
    if evaluator is not None:
        where += " AND e.evaluator = ?"
        params.append(evaluator)
    return _query(
        source,
        "SELECT coalesce(r.route, 'unknown') AS route, e.evaluator, count(*) AS requests, "
        "count(*) FILTER (WHERE e.status = 'scored') AS scored, "
        "count(*) FILTER (WHERE e.status = 'not_evaluable') AS not_evaluable, "
        "avg(e.score) AS mean_score, avg(CASE WHEN e.passed THEN 1.0 WHEN NOT e.passed THEN 0.0 END) AS pass_rate, "
        "avg(r.billed_cost_usd) AS mean_cost_usd "
        f"FROM eval_scores e JOIN request_spans r ON r.span_id = e.span_id {where} "
        "GROUP BY ALL ORDER BY e.evaluator, mean_score DESC NULLS LAST, route",
        params,
    )


def failure_clusters_latest(source: Source) -> pl.DataFrame:
    """The clusters of the most recent clustering run, largest first."""
    return _query(
        source,
        "SELECT run_id, cluster_id, created_at, evaluator, label, size, trend, suggested_fix, "
        "fix_route, fix_cost_delta_usd, example_span_ids, first_seen, last_seen FROM failure_clusters "
        "WHERE run_id = (SELECT run_id FROM failure_clusters ORDER BY created_at DESC, run_id DESC LIMIT 1) "
        "ORDER BY size DESC, cluster_id",
    )


def rollout_timeline(source: Source) -> pl.DataFrame:
    """Every canary decision in time order (start, extend, promote, rollback, manual …)."""
    return _query(
        source,
        "SELECT ts, rollout_id, candidate_version, active_version, decision, fraction, n_canary, "
        "n_active, reason, statistics FROM rollouts ORDER BY ts, rollout_id",
    )


def traffic_by_ruleset(source: Source, since: Since = None) -> pl.DataFrame:
    """Requests per day, ruleset version and arm, with error rate and billed spend."""
    where, params = _where(since)
    return _query(
        source,
        "SELECT CAST(ts AS DATE) AS day, coalesce(ruleset_version, 'unknown') AS ruleset_version, "
        "coalesce(arm, 'unknown') AS arm, count(*) AS requests, "
        "avg(CASE WHEN status = 'error' THEN 1.0 ELSE 0.0 END) AS error_rate, "
        "coalesce(sum(billed_cost_usd), 0)::DOUBLE AS spend_usd "
        f"FROM request_spans {where} GROUP BY ALL ORDER BY day, ruleset_version, arm",
        params,
    )


def _storage_url(storage: str | Path) -> str:
    text = str(storage)
    if "://" in text:
        return text
    if not Path(text).exists():
        raise FileNotFoundError(f"optimizer study storage {text!r} does not exist")
    return f"sqlite:///{Path(text).resolve()}"


_TRIAL_SCHEMA = {
    "number": pl.Int64,
    "cost": pl.Float64,
    "quality": pl.Float64,
    "feasible": pl.Boolean,
    "violation": pl.Float64,
    "params": pl.String,
}


def optimizer_trials(storage: str | Path, study_name: str | None = None) -> pl.DataFrame:
    """Completed trials of an optimizer study with their ``cost``/``quality`` user attributes.

    ``storage`` is an Optuna storage URL or a SQLite file path; ``study_name`` defaults to the
    most recently created study in it. Trials without a cost (failed, pruned) are left out.
    """
    import json

    import optuna

    url = _storage_url(storage)
    if study_name is None:
        names = optuna.get_all_study_names(storage=url)
        if not names:
            return pl.DataFrame(schema=_TRIAL_SCHEMA)
        study_name = names[-1]
    study = optuna.load_study(study_name=study_name, storage=url)
    rows = [
        {
            "number": t.number,
            "cost": float(t.user_attrs["cost"]),
            "quality": float(t.user_attrs.get("quality", float("nan"))),
            "feasible": bool(t.user_attrs.get("feasible", True)),
            "violation": float(t.user_attrs.get("violation", 0.0)),
            "params": json.dumps(t.params, sort_keys=True, default=str),
        }
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if "cost" in t.user_attrs
    ]
    return pl.DataFrame(rows, schema=_TRIAL_SCHEMA)


def pareto_indices(costs: Sequence[float | None], qualities: Sequence[float | None]) -> list[int]:
    """Positions of the points no other point beats on both axes (lower cost, higher quality),
    cheapest first. Pure, and the one front in the project: the optimizer's
    ``SearchResult.pareto`` and :func:`pareto_front` both use it.

    Sort by (cost, −quality) and keep each point that raises the best quality seen so far (by
    more than 1e-12, so of equal points the first is kept). A point with a NaN or None is never
    on it.

    >>> pareto_indices([3.0, 1.0, 2.0, 2.0], [0.9, 0.5, 0.4, 0.8])
    [1, 3, 0]
    """
    points = {
        i: (float(c), float(q))
        for i, (c, q) in enumerate(zip(costs, qualities, strict=True))
        if c is not None and q is not None and not (math.isnan(c) or math.isnan(q))
    }
    front: list[int] = []
    for i in sorted(points, key=lambda i: (points[i][0], -points[i][1])):
        if not front or points[i][1] > points[front[-1]][1] + 1e-12:
            front.append(i)
    return front


def pareto_front(trials: pl.DataFrame) -> pl.DataFrame:
    """Trials no other trial beats on both axes (lower cost, higher quality), cheapest first."""
    rows = pareto_indices(trials["cost"].to_list(), trials["quality"].to_list())
    return trials[pl.Series(rows, dtype=pl.UInt32)]
