"""Ingest throughput: image spans per second through spans_to_batch + write_tables into DuckDB.

Goal: >= 100k image spans/s. Run: ``python -m benchmarks.ingest [--spans N] [--batch B]``.
The spans are built up front (decoding is not what this measures); the clock
covers the row function (``collector.columns.spans_to_batch``, which builds the
Arrow batch) and the store write (``collector.store.write_tables``: duplicate
check and append), per batch, in one short-lived connection per batch, as the
exporter and the OTLP receiver's writer do it. Wall-clock and
CPU-time rates are both printed: on a shared machine the first understates.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from collector.columns import spans_to_batch
from collector.ingest import Counters, SpanWriter
from collector.rows import SpanRecord
from collector.store import open_store, write_tables

GOAL_SPANS_PER_S = 100_000
MODELS = ("gpt-4o", "gpt-4.1-mini", "claude-sonnet-4", "gemini-2.5-flash")
DETAILS = ("low", "high", "auto")


def make_spans(n: int, seed: int = 7) -> list[SpanRecord]:
    rng = random.Random(seed)
    t0 = 1_760_000_000_000_000_000
    resource = {"service.name": "aperture-gateway"}
    spans = []
    for i in range(n):
        w, h = rng.randint(200, 4000), rng.randint(200, 4000)
        billed = rng.randint(85, 1600)
        spans.append(
            SpanRecord(
                trace_id=f"{i // 4:032x}",
                span_id=f"{i + 1:016x}",
                parent_span_id=f"{(i // 4) + 10**12:016x}",
                name="image",
                start_ns=t0 + i * 1_000_000,
                end_ns=t0 + i * 1_000_000 + 2_000_000,
                attributes={
                    "image.index": i % 4,
                    "image.sha256": f"{rng.getrandbits(256):064x}",
                    "image.bytes": w * h // 3,
                    "image.width": w,
                    "image.height": h,
                    "image.format": "png",
                    "image.source": "base64",
                    "image.detail": rng.choice(DETAILS),
                    "image.tokens_estimated": billed,
                    "image.tokens_billed": billed,
                    "image.cost_usd": billed * 2.5e-6,
                    "gen_ai.provider.name": "openai",
                    "aperture.provider": "openai",
                    "gen_ai.request.model": rng.choice(MODELS),
                    "aperture.team": f"team-{i % 7}",
                    "aperture.ruleset.version": "v3",
                    "aperture.rule.id": "default",
                    "aperture.ruleset.arm": "active",
                    "aperture.requested_model": "aperture/auto",
                    "aperture.task": "ocr",
                    "aperture.request_id": f"req-{i // 4}",
                    "aperture.image.text_height_px": rng.uniform(6, 60),
                    "aperture.image.tokens_low_estimate": 85,
                    "aperture.route.propensity": 0.9,
                },
                resource=resource,
            )
        )
    return spans


def run(n_spans: int, batch: int, db: Path, *, receiver: bool = False) -> dict[str, float]:
    """``receiver``: hand each batch to the OTLP receiver's writer thread (``SpanWriter``)
    and build the next one meanwhile, as the receiver's request threads do; otherwise
    build and write in turn, as the exporter does."""
    spans = make_spans(n_spans)
    map_s = insert_s = 0.0
    writer = SpanWriter(db, Counters(), queue_size=2, max_batch_spans=batch) if receiver else None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for lo in range(0, n_spans, batch):
        t = time.perf_counter()
        tables = spans_to_batch(spans[lo : lo + batch])
        t2 = time.perf_counter()
        if writer is not None:
            while not writer.submit(tables, min(batch, n_spans - lo)):
                time.sleep(0.001)  # queue full: the receiver would answer 503
        else:
            with open_store(db) as conn:
                write_tables(conn, tables)
        insert_s += time.perf_counter() - t2
        map_s += t2 - t
    if writer is not None:
        writer.stop()
        assert writer.counters.get("spans_written") == n_spans
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    with open_store(db, read_only=True) as conn:
        stored = conn.execute("SELECT count(*) FROM image_spans").fetchall()[0][0]
    assert stored == n_spans, (stored, n_spans)
    return {
        "spans": n_spans,
        "spans_per_s": n_spans / wall_s,
        "spans_per_cpu_s": n_spans / cpu_s,
        "spans_to_batch_s": map_s,
        "write_s": insert_s,
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument(
        "--receiver", action="store_true", help="write on the receiver's writer thread"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.spans, args.batch, Path(tmp) / "ingest.duckdb", receiver=args.receiver)
    verdict = "meets" if result["spans_per_s"] >= GOAL_SPANS_PER_S else "MISSES"
    print(
        f"ingest{' (receiver writer thread)' if args.receiver else ''}: "
        f"{result['spans']:,} image spans, {result['spans_per_s']:,.0f} spans/s wall, "
        f"{result['spans_per_cpu_s']:,.0f} per CPU-second (all threads, "
        f"{1e6 / result['spans_per_cpu_s']:.2f} µs CPU/span) "
        f"(spans_to_batch {result['spans_to_batch_s']:.2f}s, write_tables {result['write_s']:.2f}s); "
        f"{verdict} the goal of {GOAL_SPANS_PER_S:,}/s"
    )
    return result


if __name__ == "__main__":
    main()
