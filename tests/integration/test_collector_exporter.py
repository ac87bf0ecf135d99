"""DuckDBSpanExporter behind the stock BatchSpanProcessor, on real DuckDB files."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.exporter import DuckDBSpanExporter
from collector.store import fetch_df, open_store

REPO = Path(__file__).resolve().parents[2]


def emit_image_spans(provider: TracerProvider, n: int, offset: int = 0) -> None:
    tracer = provider.get_tracer("aperture.test")
    with tracer.start_as_current_span("chat gpt-4o", attributes={"gen_ai.operation.name": "chat"}):
        for i in range(offset, offset + n):
            with tracer.start_as_current_span(
                "image",
                attributes={
                    "image.index": i,
                    "image.width": 640,
                    "image.height": 480,
                    "image.detail": "low",
                    "image.tokens_billed": 85,
                    "image.cost_usd": 0.0002125,
                    "aperture.team": "ops",
                },
            ):
                pass


def finished_spans(n: int) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    emit_image_spans(provider, n)
    provider.shutdown()
    return list(memory.get_finished_spans())


def counts(db: Path) -> tuple[int, int, int]:
    with open_store(db, read_only=True) as conn:
        return tuple(  # type: ignore[return-value]
            int(conn.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0])
            for t in ("spans", "image_spans", "request_spans")
        )


def test_batch_processor_writes_image_spans(tmp_path: Path) -> None:
    db = tmp_path / "traces.duckdb"
    exporter = DuckDBSpanExporter(db)
    provider = TracerProvider(resource=Resource.create({"service.name": "gateway"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=64))
    emit_image_spans(provider, 300)
    assert provider.force_flush(30_000)
    provider.shutdown()
    assert counts(db) == (301, 300, 1)
    with open_store(db, read_only=True) as conn:
        df = fetch_df(
            conn,
            "SELECT sum(cost_usd) AS c, min(team) AS t, count(DISTINCT request_span_id) AS r FROM image_spans",
        )
    assert df["c"][0] == pytest.approx(300 * 0.0002125) and df["t"][0] == "ops" and df["r"][0] == 1
    assert exporter.exported == 301 and exporter.dropped == 0


def test_reexport_does_not_duplicate(tmp_path: Path) -> None:
    db = tmp_path / "traces.duckdb"
    spans = finished_spans(10)
    exporter = DuckDBSpanExporter(db)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert exporter.export(spans[:3] + spans[:3]) is SpanExportResult.SUCCESS
    assert counts(db) == (11, 10, 1)


WRITER = """
import sys
from collector.store import open_store, insert_rows
for i in range(int(sys.argv[2])):
    with open_store(sys.argv[1], timeout_s=30) as conn:
        insert_rows(conn, "rollouts", [{"rollout_id": f"r{i}", "decision": "extend"}])
print("done", flush=True)
"""


def test_other_process_writes_while_exporter_runs(tmp_path: Path) -> None:
    db = tmp_path / "shared.duckdb"
    with open_store(db):
        pass
    other = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), "40"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    exporter = DuckDBSpanExporter(db)
    provider = TracerProvider()
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_export_batch_size=16, schedule_delay_millis=5)
    )
    for batch in range(20):
        emit_image_spans(provider, 10, offset=batch * 10)
    provider.shutdown()
    out, _ = other.communicate(timeout=60)
    assert other.returncode == 0 and out.strip() == "done"
    assert counts(db) == (220, 200, 20)
    with open_store(db, read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM rollouts").fetchall()[0][0] == 40
    assert exporter.dropped == 0


HOLD = """
import sys, duckdb
conn = duckdb.connect(sys.argv[1])
print("locked", flush=True)
sys.stdin.readline()
"""


@contextmanager
def held_lock(db: Path) -> Iterator[subprocess.Popen[str]]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)


def test_locked_store_fails_loudly_and_counts_drops(tmp_path: Path) -> None:
    db = tmp_path / "locked.duckdb"
    with open_store(db):
        pass
    spans = finished_spans(4)
    exporter = DuckDBSpanExporter(db, lock_timeout_s=0.2, max_attempts=2, retry_backoff_s=0.05)
    with held_lock(db):
        assert exporter.export(spans) is SpanExportResult.FAILURE
    assert exporter.dropped == 5
    assert list(exporter.dropped_by_reason) == ["store_error:StoreLockedError"]
    # the file is free again: the next batch goes through, and the earlier loss is on record
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    with open_store(db, read_only=True) as conn:
        recorded = conn.execute("SELECT reason, count FROM dropped_spans").fetchall()
    assert recorded == [("store_error:StoreLockedError", 5)]
    exporter.shutdown()
    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert exporter.dropped == 10
    assert counts(db) == (5, 4, 1)


def test_waits_for_a_briefly_held_lock(tmp_path: Path) -> None:
    db = tmp_path / "brief.duckdb"
    with open_store(db):
        pass
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time,duckdb; c=duckdb.connect(sys.argv[1]); "
            "print('locked', flush=True); time.sleep(0.5)",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    exporter = DuckDBSpanExporter(db, lock_timeout_s=20)
    assert exporter.export(finished_spans(2)) is SpanExportResult.SUCCESS
    holder.wait(10)
    assert counts(db) == (3, 2, 1) and exporter.dropped == 0


TRY_OPEN = """
import sys
from collector.store import StoreLockedError, open_store
try:
    with open_store(sys.argv[1], timeout_s=0.3):
        print("opened", flush=True)
except StoreLockedError:
    print("locked", flush=True)
"""


def other_process_opens(db: Path) -> str:
    """What another process gets when it tries to open the store for 0.3 s now."""
    done = subprocess.run([sys.executable, "-c", TRY_OPEN, str(db)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    return done.stdout.strip()


def test_the_store_is_held_between_batches_until_shutdown(tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    exporter = DuckDBSpanExporter(db, hold_s=60)
    assert exporter.export(finished_spans(2)) is SpanExportResult.SUCCESS
    assert exporter.export(finished_spans(3)) is SpanExportResult.SUCCESS
    assert other_process_opens(db) == "locked"
    assert counts(db) == (7, 5, 2)  # this process reads through the held connection
    exporter.shutdown()
    assert other_process_opens(db) == "opened"


def test_a_held_store_is_let_go_after_hold_s(tmp_path: Path) -> None:
    db = tmp_path / "expiring.duckdb"
    exporter = DuckDBSpanExporter(db, hold_s=0.2)
    assert exporter.export(finished_spans(2)) is SpanExportResult.SUCCESS
    time.sleep(0.5)
    assert other_process_opens(db) == "opened"
    # and the next batch opens it again
    assert exporter.export(finished_spans(1)) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert counts(db) == (5, 3, 2)


def test_hold_s_zero_closes_the_store_after_every_batch(tmp_path: Path) -> None:
    db = tmp_path / "unheld.duckdb"
    exporter = DuckDBSpanExporter(db, hold_s=0)
    assert exporter.export(finished_spans(2)) is SpanExportResult.SUCCESS
    assert other_process_opens(db) == "opened"
    assert counts(db) == (3, 2, 1)


def test_a_forked_child_neither_uses_nor_closes_the_held_store(tmp_path: Path) -> None:
    db = tmp_path / "forked.duckdb"
    exporter = DuckDBSpanExporter(db, hold_s=60, lock_timeout_s=0.2, max_attempts=1)
    assert exporter.export(finished_spans(2)) is SpanExportResult.SUCCESS
    pid = os.fork()
    if pid == 0:  # the child: the parent owns the file; the child's batch fails loudly, not hangs
        failed = exporter.export(finished_spans(1)) is SpanExportResult.FAILURE
        os._exit(0 if failed and list(exporter.dropped_by_reason) == ["store_error:StoreError"] else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert exporter.export(finished_spans(1)) is SpanExportResult.SUCCESS  # still held, still usable
    exporter.shutdown()
    assert counts(db) == (5, 3, 2)
