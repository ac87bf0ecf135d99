"""The receiver's store writer: a lone batch is written at once, a burst within the write
interval becomes one write, a full batch or a stop does not wait, and nothing is lost."""

from __future__ import annotations

from pathlib import Path

import duckdb

from collector.columns import Batch, spans_to_batch
from collector.ingest import Counters, SpanWriter
from collector.record import SpanRecord

T0 = 1_760_000_000_000_000_000


def _batch(first: int, n: int) -> tuple[Batch, int]:
    spans = [
        SpanRecord(
            trace_id=f"{i:032x}", span_id=f"{i + 1:016x}", name="image", start_ns=T0 + i, end_ns=T0 + i + 10,
            attributes={"image.index": 0, "image.sha256": f"{i:064x}", "gen_ai.request.model": "gpt-4o"},
            resource={"service.name": "gw"},
        )
        for i in range(first, first + n)
    ]
    return spans_to_batch(spans), n


def _rows(db: Path) -> int:
    with duckdb.connect(str(db), read_only=True) as conn:
        row = conn.execute("SELECT count(*) FROM image_spans").fetchone()
    return int(row[0]) if row else 0


def test_writer_writes_a_lone_batch_at_once_and_a_burst_in_one_write(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    writer = SpanWriter(db, Counters(), min_write_interval_s=600)
    assert writer.submit(*_batch(0, 3))
    assert writer.flush(timeout_s=60)  # the first write does not wait for the interval
    assert writer.counters.get("store_writes") == 1
    for k in range(5):
        assert writer.submit(*_batch(100 + 10 * k, 2))
    writer.stop(timeout_s=60)  # held within the interval, written by the stop without waiting
    assert writer.counters.get("store_writes") == 2
    assert writer.counters.get("spans_written") == 13
    assert _rows(db) == 13


def test_writer_writes_a_full_batch_without_waiting(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    writer = SpanWriter(db, Counters(), min_write_interval_s=600, max_batch_spans=4)
    assert writer.submit(*_batch(0, 1))
    assert writer.flush(timeout_s=60)
    assert writer.submit(*_batch(10, 2))
    assert writer.submit(*_batch(20, 2))
    assert writer.flush(timeout_s=60)  # 4 spans: full, so written inside the interval
    assert writer.counters.get("store_writes") == 2
    writer.stop()
    assert _rows(db) == 5


def test_writer_without_an_interval_writes_whenever_idle(tmp_path: Path) -> None:
    db = tmp_path / "s.duckdb"
    writer = SpanWriter(db, Counters(), min_write_interval_s=0)
    for k in range(3):
        assert writer.submit(*_batch(10 * k, 1))
        assert writer.flush(timeout_s=60)
    writer.stop()
    assert writer.counters.get("store_writes") == 3
    assert _rows(db) == 3
