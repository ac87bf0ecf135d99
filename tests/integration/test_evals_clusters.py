"""Failure clustering over a real DuckDB store: one failing route, one cluster, one fix."""

from __future__ import annotations

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


def build_store(path: Path, n: int = 240, seed: int = 3, *, failing_share_late: float = 1.0) -> None:
    """mini:low fails exactly on small text (< 10 px); everything else passes."""
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
        fails = route == "gpt-4o-mini:low" and text_px < 10
        req.append({"trace_id": trace, "span_id": span, "ts": ts, "model": model, "route": route,
                    "task": "transcribe", "status": "ok"})
        img.append({"trace_id": trace, "span_id": f"{i + 10_000:016x}", "request_span_id": span,
                    "ts": ts, "image_index": 0, "width": w, "height": h, "format": rng.choice(["png", "jpeg"]),
                    "detail": detail, "model": model, "text_height_px": text_px,
                    "cost_usd": cost * rng.uniform(0.9, 1.1)})
        score = rng.uniform(0.3, 0.7) if fails else rng.uniform(0.93, 1.0)
        expl = ("CER 0.4 WER 0.6 (below 0.90) vs reference; mostly missed text (coverage 50%)"
                if fails else "CER 0.02 WER 0.05 (ok) vs reference")
        scores.append({"trace_id": trace, "span_id": span, "evaluator": "ocr_faithfulness",
                       "evaluator_version": "1", "status": "scored", "score": score,
                       "passed": not fails, "explanation": expl, "ts": ts})
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
    print(c.printable(), c.features)
    assert "gpt-4o-mini" in c.label and "detail=low" in c.label and "text<10px" in c.label
    assert c.route == "gpt-4o-mini:low"
    assert c.fix is not None and c.fix.route == "gpt-4o-mini:high"
    assert c.fix.cost_delta_usd is not None and c.fix.cost_delta_usd > 0
