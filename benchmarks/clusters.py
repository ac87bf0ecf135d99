"""Failure clustering at scale: 100k failing scores (plus as many passing) within 60 s.

Run: ``python -m benchmarks.clusters [--failures N] [--passes M]``.

A DuckDB store is filled with synthetic request spans, image spans and eval scores: 90 %
of the failures come from three planted patterns (a route on small text, a route on large
images, a format), 10 % are noise spread over every feature; explanations carry per-case
numbers and quoted values, as real ones do. The clock covers ``find_failure_clusters``
(query, features, TF-IDF, clustering, labels, fixes) and, separately, ``write_clusters``.
The benchmark also checks that the planted patterns come out as the largest clusters.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from collector.store import insert_rows, open_store
from evals.clusters import find_failure_clusters, write_clusters

GOAL_S = 60.0
ROUTES = {
    "gpt-4o-mini:low": 0.0004,
    "gpt-4o-mini:high": 0.0030,
    "gpt-4o:low": 0.0011,
    "gpt-4o:high": 0.0060,
    "claude-sonnet-4:auto": 0.0048,
    "gemini-2.5-flash:high": 0.0009,
}
TEXT_PX = (7.0, 9.0, 12.0, 14.0, 18.0, 22.0, 30.0)
SIZES = ((600, 800), (900, 1200), (1240, 1754), (1920, 1080), (3840, 2160), (400, 300))
FORMATS = ("png", "jpeg", "webp", "heic")
PLANTED = (
    (
        "gpt-4o-mini:low",
        lambda r: r.choice(TEXT_PX[:2]),
        lambda r: r.choice(SIZES),
        lambda r: r.choice(FORMATS),
        "missed",
    ),
    (
        "gemini-2.5-flash:high",
        lambda r: r.choice(TEXT_PX),
        lambda r: SIZES[4],
        lambda r: r.choice(FORMATS),
        "invented",
    ),
    (
        "gpt-4o:low",
        lambda r: r.choice(TEXT_PX[2:5]),
        lambda r: r.choice(SIZES),
        lambda r: "heic",
        "misread",
    ),
)


def _explanation(rng: random.Random, kind: str, failed: bool) -> str:
    if not failed:
        return f"CER {rng.uniform(0, 0.08):.3f} WER {rng.uniform(0, 0.2):.3f} (ok) vs reference"
    dominant = {
        "missed": "missed text",
        "invented": "invented text",
        "misread": "misread characters",
    }[kind]
    return (
        f"CER {rng.uniform(0.15, 0.9):.3f} WER {rng.uniform(0.3, 1):.3f} (below 0.90) vs reference; "
        f"mostly {dominant} (coverage {rng.randint(10, 99)}%, faithfulness {rng.randint(10, 99)}%, "
        f"'{rng.randint(1000, 9999)}' {rng.randint(0, 40)} substitutions)"
    )


def build_store(path: Path, failures: int, passes: int, seed: int = 1) -> None:
    rng = random.Random(seed)
    t0 = datetime(2026, 1, 1)
    tables: dict[str, list[dict[str, Any]]] = {
        "request_spans": [],
        "image_spans": [],
        "eval_scores": [],
    }
    total = failures + passes
    for i in range(total):
        failed = i < failures
        if failed and rng.random() < 0.9:
            route, px_f, size_f, fmt_f, kind = rng.choice(PLANTED)
            px, (w, h), fmt = px_f(rng), size_f(rng), fmt_f(rng)
        else:
            route, px, (w, h), fmt = (
                rng.choice(list(ROUTES)),
                rng.choice(TEXT_PX),
                rng.choice(SIZES),
                rng.choice(FORMATS),
            )
            kind = rng.choice(("missed", "invented", "misread"))
        model, detail = route.split(":")
        trace, span = f"{i + 1:032x}", f"{i + 1:016x}"
        ts = t0 + timedelta(seconds=rng.uniform(0, 7 * 86400))
        tables["request_spans"].append(
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
        tables["image_spans"].append(
            {
                "trace_id": trace,
                "span_id": f"{i + 1 + total:016x}",
                "request_span_id": span,
                "ts": ts,
                "image_index": 0,
                "width": w,
                "height": h,
                "format": fmt,
                "detail": detail,
                "model": model,
                "text_height_px": px,
                "cost_usd": ROUTES[route] * rng.uniform(0.8, 1.2),
            }
        )
        tables["eval_scores"].append(
            {
                "trace_id": trace,
                "span_id": span,
                "evaluator": "ocr_faithfulness",
                "evaluator_version": "1",
                "status": "scored",
                "score": rng.uniform(0.1, 0.85) if failed else rng.uniform(0.92, 1.0),
                "passed": not failed,
                "explanation": _explanation(rng, kind, failed),
                "ts": ts,
            }
        )
    with open_store(path) as conn:
        for table, rows in tables.items():
            for start in range(0, len(rows), 50_000):
                insert_rows(conn, table, rows[start : start + 50_000])


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--failures", type=int, default=100_000)
    p.add_argument("--passes", type=int, default=200_000)
    p.add_argument("--min-size", type=int, default=20)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        t = time.perf_counter()
        build_store(db, args.failures, args.passes)
        build_s = time.perf_counter() - t
        wall, cpu = time.perf_counter(), time.process_time()
        clusters = find_failure_clusters(db, min_size=args.min_size)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        t = time.perf_counter()
        write_clusters(db, clusters)
        write_s = time.perf_counter() - t
    print(f"store built in {build_s:.1f}s ({args.failures} failures, {args.passes} passes)")
    print(
        f"find_failure_clusters: {wall:.2f}s wall, {cpu:.2f}s cpu (goal <= {GOAL_S:.0f}s); write {write_s:.2f}s"
    )
    for c in clusters[:6]:
        print(f"  {c.size:7d}  {c.trend:8s} {c.label}  ->  {c.suggested_fix or '-'}")
    print(f"  ... {len(clusters)} clusters in all")
    planted = {route for route, *_ in PLANTED}
    top_routes = {c.route for c in clusters[:3]}
    print(f"planted routes among the 3 largest clusters: {sorted(top_routes & planted)}")
    return {"wall_s": wall, "cpu_s": cpu, "clusters": float(len(clusters)), "write_s": write_s}


if __name__ == "__main__":
    main()
