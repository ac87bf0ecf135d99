"""Failure clustering over a real DuckDB store: one failing route, one cluster, one fix."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from collector.store import fetch_df, insert_rows, open_store
from evals.clusters import find_failure_clusters, write_clusters

ROUTES = {  # route -> (model, detail, cost per image)
    "gpt-4o-mini:low": ("gpt-4o-mini", "low", 0.0004),
    "gpt-4o-mini:high": ("gpt-4o-mini", "high", 0.0030),
    "gpt-4o:high": ("gpt-4o", "high", 0.0060),
}


def build_store(path: Path, n: int = 240, seed: int = 3, *, only_late: bool = False) -> None:
    """mini:low fails exactly on small text (< 10 px); everything else passes.

    ``only_late``: the failures start half-way through the window (a regression).
    """
    rng = random.Random(seed)
    t0 = datetime(2026, 1, 1)
    req, img, scores = [], [], []
    for i in range(n):
        route = list(ROUTES)[i % 3]
        model, detail, cost = ROUTES[route]
        text_px = rng.choice([7.0, 8.0, 9.0, 12.0, 14.0, 18.0, 26.0])
        w, h = rng.choice([(800, 1100), (1200, 900), (700, 1000)])
        trace, span = f"{i:032x}", f"{i + 1:016x}"
        ts = t0 + timedelta(minutes=i)
        fails = route == "gpt-4o-mini:low" and text_px < 10 and (not only_late or i >= n // 2)
        req.append(
            {
                "trace_id": trace,
                "span_id": span,
                "ts": ts,
                "model": model,
                "route": route,
                "task": "transcribe",
                "status": "ok",
            }
        )
        img.append(
            {
                "trace_id": trace,
                "span_id": f"{i + 10_000:016x}",
                "request_span_id": span,
                "ts": ts,
                "image_index": 0,
                "width": w,
                "height": h,
                "format": rng.choice(["png", "jpeg"]),
                "detail": detail,
                "model": model,
                "text_height_px": text_px,
                "cost_usd": cost * rng.uniform(0.9, 1.1),
            }
        )
        score = rng.uniform(0.3, 0.7) if fails else rng.uniform(0.93, 1.0)
        expl = (
            "CER 0.4 WER 0.6 (below 0.90) vs reference; mostly missed text (coverage 50%)"
            if fails
            else "CER 0.02 WER 0.05 (ok) vs reference"
        )
        scores.append(
            {
                "trace_id": trace,
                "span_id": span,
                "evaluator": "ocr_faithfulness",
                "evaluator_version": "1",
                "status": "scored",
                "score": score,
                "passed": not fails,
                "explanation": expl,
                "ts": ts,
            }
        )
    with open_store(path) as conn:
        insert_rows(conn, "request_spans", req)
        insert_rows(conn, "image_spans", img)
        insert_rows(conn, "eval_scores", scores)


def test_one_failing_route_gives_one_cluster_with_a_fix(tmp_path: Path) -> None:
    db = tmp_path / "a.duckdb"
    build_store(db)
    clusters = find_failure_clusters(db, min_size=3)
    assert len(clusters) == 1, [c.printable() for c in clusters]
    c = clusters[0]
    assert "gpt-4o-mini" in c.label and "detail=low" in c.label and "text<10px" in c.label
    assert "format=" not in c.label  # failures hit png and jpeg alike
    assert c.route == "gpt-4o-mini:low" and c.trend == "steady"
    assert c.fix is not None and c.fix.route == "gpt-4o-mini:high"  # cheapest that passes
    assert c.fix.cost_delta_usd == pytest.approx(0.0026, abs=0.0004)
    assert "gpt-4o-mini:high" in (c.suggested_fix or "")
    assert c.features["detail=low"]["share"] == 1.0 and c.features["detail=low"]["lift"] > 2

    run_id = write_clusters(db, clusters)
    with open_store(db, read_only=True) as conn:
        df = fetch_df(conn, "SELECT * FROM failure_clusters")
    [row] = df.iter_rows(named=True)
    assert row["run_id"] == run_id and row["label"] == c.label and row["size"] == c.size
    assert row["fix_route"] == "gpt-4o-mini:high" and row["trend"] == "steady"
    assert json.loads(row["example_span_ids"]) == c.example_span_ids
    assert row["first_seen"] <= row["last_seen"]


def test_a_regression_is_rising_and_since_narrows_the_window(tmp_path: Path) -> None:
    db = tmp_path / "a.duckdb"
    build_store(db, only_late=True)
    [c] = find_failure_clusters(db, min_size=3)
    assert c.trend == "rising"
    assert find_failure_clusters(db, since=datetime(2026, 1, 1) + timedelta(minutes=240)) == []


def test_no_failures_or_too_few_give_no_clusters(tmp_path: Path) -> None:
    db = tmp_path / "a.duckdb"
    with open_store(db):
        pass
    assert find_failure_clusters(db) == []
    build_store(db, n=12)
    assert find_failure_clusters(db, min_size=50) == []
    assert write_clusters(db, [])  # a run id even when there is nothing to write
