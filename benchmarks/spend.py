"""Spend report latency over 10M image spans.

Goal: ``spend_report`` in <= 1 s. Run: ``python -m benchmarks.spend [--rows N] [--by model]``.
The rows are generated inside DuckDB with ``range()`` (not timed) into a store
file created by the real migrations; then every grouping is timed, best of
``--repeat`` runs, each on a fresh read-only connection as the CLI would use.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from collector.spend import GROUPINGS, spend_report
from collector.store import open_store

GOAL_S = 1.0

# Deterministic pseudo-random columns from the row number (hash() is stable in DuckDB).
GENERATE = """
INSERT INTO image_span_log BY NAME
SELECT
    lpad(printf('%x', i // 4), 32, '0')                       AS trace_id,
    lpad(printf('%x', i), 16, '0')                            AS span_id,
    lpad(printf('%x', 1000000000000 + i // 4), 16, '0')       AS request_span_id,
    TIMESTAMP '2025-01-01' + to_microseconds(i * 250000)      AS ts,
    (i % 4)::INTEGER                                          AS image_index,
    md5(i::VARCHAR) || md5((i + 1)::VARCHAR)                  AS sha256,
    w * h // 3                                                AS bytes,
    w::INTEGER AS width, h::INTEGER AS height,
    'png' AS format, 'base64' AS source,
    ['low', 'high', 'auto'][1 + (hash(i, 1) % 3)::BIGINT]               AS detail,
    billed AS tokens_estimated, billed AS tokens_billed,
    billed * 2.5e-6                                           AS cost_usd,
    ['openai', 'anthropic', 'google'][1 + (hash(i, 2) % 3)::BIGINT]     AS provider,
    ['gpt-4o', 'gpt-4.1-mini', 'claude-sonnet-4', 'gemini-2.5-flash'][1 + (hash(i, 3) % 4)::BIGINT] AS model,
    'team-' || ((hash(i, 4) % 12)::BIGINT)::VARCHAR                     AS team,
    'v' || (1 + i // 2500000)::VARCHAR                        AS ruleset_version,
    'rule-' || ((hash(i, 5) % 8)::BIGINT)::VARCHAR                      AS rule_id,
    'active' AS arm, 'aperture/auto' AS requested_model, 'ocr' AS task,
    'req-' || (i // 4)::VARCHAR                               AS request_id,
    6 + ((hash(i, 6) % 5400)::BIGINT) / 100.0                           AS text_height_px,
    85                                                        AS tokens_low_estimate,
    0.9                                                       AS propensity
FROM (
    SELECT range AS i,
           200 + (hash(range, 7) % 3800)::BIGINT AS w,
           200 + (hash(range, 8) % 3800)::BIGINT AS h,
           85 + (hash(range, 9) % 1500)::BIGINT AS billed
    FROM range(?)
)
"""


def build(db: Path, rows: int) -> float:
    started = time.perf_counter()
    with open_store(db) as conn:
        conn.execute("SET enable_progress_bar = false")
        conn.execute(GENERATE, [rows]).fetchall()
    return time.perf_counter() - started


def time_report(db: Path, by: str, repeat: int) -> tuple[float, float]:
    """Best wall and CPU seconds (all threads) of one report on a fresh connection."""
    best, best_cpu = float("inf"), float("inf")
    for _ in range(repeat):
        started, cpu = time.perf_counter(), time.process_time()
        with open_store(db, read_only=True) as conn:
            report = spend_report(conn, by=by, since=None, top=10)
        best = min(best, time.perf_counter() - started)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    assert report.images > 0
    return best, best_cpu


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--by", choices=sorted(GROUPINGS), action="append")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", type=Path, help="reuse/keep this store file instead of a temp one")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "spend.duckdb"
        if not db.exists():
            print(f"spend: generating {args.rows:,} image spans ... ", end="", flush=True)
            print(f"{build(db, args.rows):.1f}s")
        results = {by: time_report(db, by, args.repeat) for by in args.by or sorted(GROUPINGS)}
    for by, (seconds, cpu) in results.items():
        verdict = "meets" if seconds <= GOAL_S else "MISSES"
        print(
            f"spend_report(by={by!r}) over {args.rows:,} rows: {seconds:.3f}s wall, "
            f"{cpu:.3f}s CPU ({verdict} <= {GOAL_S:g}s)"
        )
    return {by: seconds for by, (seconds, _) in results.items()}


if __name__ == "__main__":
    main()
