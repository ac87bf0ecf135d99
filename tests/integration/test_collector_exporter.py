"""DuckDBSpanExporter behind the stock BatchSpanProcessor, on real DuckDB files."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aperture.wiring import build_telemetry
from collector.exporter import DuckDBSpanExporter
from collector.store import fetch_df, open_store
from router.config import parse_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "emulated.yaml"


@pytest.fixture(params=["thread", "process"])
def convert_in(request: pytest.FixtureRequest) -> Any:
    """Where the exporter turns spans into rows: every behaviour below holds for both."""
    return request.param


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


def test_batch_processor_writes_image_spans(tmp_path: Path, convert_in: Any) -> None:
    db = tmp_path / "traces.duckdb"
    exporter = DuckDBSpanExporter(db, convert_in=convert_in)
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


def test_reexport_does_not_duplicate(tmp_path: Path, convert_in: Any) -> None:
    db = tmp_path / "traces.duckdb"
    spans = finished_spans(10)
    exporter = DuckDBSpanExporter(db, convert_in=convert_in)
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


def test_other_process_writes_while_exporter_runs(tmp_path: Path, convert_in: Any) -> None:
    db = tmp_path / "shared.duckdb"
    with open_store(db):
        pass
    other = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), "40"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    exporter = DuckDBSpanExporter(db, convert_in=convert_in)
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


def test_locked_store_fails_loudly_and_counts_drops(tmp_path: Path, convert_in: Any) -> None:
    db = tmp_path / "locked.duckdb"
    with open_store(db):
        pass
    spans = finished_spans(4)
    exporter = DuckDBSpanExporter(db, lock_timeout_s=0.2, max_attempts=2, retry_backoff_s=0.05, convert_in=convert_in)
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


def test_waits_for_a_briefly_held_lock(tmp_path: Path, convert_in: Any) -> None:
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
    exporter = DuckDBSpanExporter(db, lock_timeout_s=20, convert_in=convert_in)
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


def test_the_store_is_held_between_batches_until_shutdown(tmp_path: Path, convert_in: Any) -> None:
    db = tmp_path / "held.duckdb"
    exporter = DuckDBSpanExporter(db, hold_s=60, convert_in=convert_in)
    assert exporter.export(finished_spans(2)) is SpanExportResult.SUCCESS
    assert exporter.export(finished_spans(3)) is SpanExportResult.SUCCESS
    assert other_process_opens(db) == "locked"
    assert counts(db) == (7, 5, 2)  # this process reads through the held connection
    exporter.shutdown()
    assert other_process_opens(db) == "opened"


def test_a_held_store_is_let_go_after_hold_s(tmp_path: Path, convert_in: Any) -> None:
    db = tmp_path / "expiring.duckdb"
    exporter = DuckDBSpanExporter(db, hold_s=0.2, convert_in=convert_in)
    assert exporter.export(finished_spans(2)) is SpanExportResult.SUCCESS
    time.sleep(0.5)
    assert other_process_opens(db) == "opened"
    # and the next batch opens it again
    assert exporter.export(finished_spans(1)) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert counts(db) == (5, 3, 2)


def test_hold_s_zero_closes_the_store_after_every_batch(tmp_path: Path, convert_in: Any) -> None:
    db = tmp_path / "unheld.duckdb"
    exporter = DuckDBSpanExporter(db, hold_s=0, convert_in=convert_in)
    assert exporter.export(finished_spans(2)) is SpanExportResult.SUCCESS
    assert other_process_opens(db) == "opened"
    assert counts(db) == (3, 2, 1)


def test_a_forked_child_neither_uses_nor_closes_the_held_store(tmp_path: Path, convert_in: Any) -> None:
    db = tmp_path / "forked.duckdb"
    exporter = DuckDBSpanExporter(db, hold_s=60, lock_timeout_s=0.2, max_attempts=1, convert_in=convert_in)
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


# ---------------------------------------------------------------- the converter process


def table_rows(db: Path) -> dict[str, list[tuple[object, ...]]]:
    with open_store(db, read_only=True) as conn:
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY span_id").fetchall()
            for table in ("spans", "image_spans", "request_spans")
        }


def test_process_and_thread_conversion_store_the_same_rows(tmp_path: Path) -> None:
    spans = finished_spans(6)
    stores = {}
    for mode in ("thread", "process"):
        db = tmp_path / f"{mode}.duckdb"
        exporter = DuckDBSpanExporter(db, convert_in=mode)  # type: ignore[arg-type]
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        exporter.shutdown()
        stores[mode] = table_rows(db)
    assert stores["thread"] == stores["process"]
    assert [len(rows) for rows in stores["process"].values()] == [7, 6, 1]


def converting_exporter(db: Path, first_batch: int) -> tuple[DuckDBSpanExporter, int]:
    """An exporter with a converter process that has converted one batch, and that process's id."""
    exporter = DuckDBSpanExporter(db, convert_in="process")
    assert exporter.export(finished_spans(first_batch)) is SpanExportResult.SUCCESS
    pid = exporter.converter_pid
    assert pid is not None
    return exporter, pid


def test_a_dead_converter_is_replaced_on_the_next_batch(tmp_path: Path) -> None:
    db = tmp_path / "replaced.duckdb"
    exporter, first = converting_exporter(db, 2)
    os.kill(first, signal.SIGKILL)
    time.sleep(0.2)
    assert exporter.export(finished_spans(3)) is SpanExportResult.SUCCESS
    assert exporter.converter_starts == 2 and exporter.converter_pid not in (None, first)
    exporter.shutdown()
    assert counts(db) == (7, 5, 2) and exporter.dropped == 0


def test_a_hung_converter_costs_no_spans_and_is_not_restarted_at_once(tmp_path: Path) -> None:
    db = tmp_path / "hung.duckdb"
    exporter, pid = converting_exporter(db, 1)
    converter = exporter._converter
    assert converter is not None
    converter.reply_timeout_s = 0.5  # 10 s in service
    os.kill(pid, signal.SIGSTOP)
    try:
        assert exporter.export(finished_spans(4)) is SpanExportResult.SUCCESS  # converted here
        assert exporter.converter_pid is None  # the hung one was killed
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    # within restart_after_s of a failure, batches are converted here without a new child
    assert exporter.export(finished_spans(1)) is SpanExportResult.SUCCESS
    assert exporter.converter_starts == 1 and exporter.converter_pid is None
    converter.restart_after_s, converter.reply_timeout_s = 0.0, 10.0  # 30 s and 10 s in service
    assert exporter.export(finished_spans(1)) is SpanExportResult.SUCCESS  # a new converter
    assert exporter.converter_starts == 2 and exporter.converter_pid is not None
    exporter.shutdown()
    assert counts(db) == (11, 7, 4) and exporter.dropped == 0


def test_the_converter_ignores_ctrl_c(tmp_path: Path) -> None:
    db = tmp_path / "sigint.duckdb"
    exporter, pid = converting_exporter(db, 1)
    os.kill(pid, signal.SIGINT)  # what a Ctrl-C sends the gateway's whole process group
    time.sleep(0.3)
    assert exporter.export(finished_spans(1)) is SpanExportResult.SUCCESS
    assert exporter.converter_pid == pid and exporter.converter_starts == 1
    exporter.shutdown()
    assert exporter.converter_pid is None
    assert counts(db) == (4, 2, 2)


ABANDON = """
import os
import sys
from tests.integration.test_collector_exporter import finished_spans
from collector.exporter import DuckDBSpanExporter
exporter = DuckDBSpanExporter(sys.argv[1], convert_in="process")
assert exporter.export(finished_spans(3)).name == "SUCCESS"
print(exporter.converter_pid, flush=True)
os._exit(0)  # no shutdown: the gateway died
"""


def _gone(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_the_converter_exits_with_its_gateway(tmp_path: Path) -> None:
    db = tmp_path / "orphan.duckdb"
    done = subprocess.run([sys.executable, "-c", ABANDON, str(db)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.strip())
    deadline = time.monotonic() + 30
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(pid)
    assert counts(db) == (4, 3, 1)


def test_an_unknown_conversion_place_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="convert_in"):
        DuckDBSpanExporter(tmp_path / "x.duckdb", convert_in="fork")  # type: ignore[arg-type]


def _config(**telemetry: object) -> Any:
    data = yaml.safe_load(EXAMPLE.read_text())
    data.setdefault("telemetry", {}).update(telemetry)
    return parse_config(yaml.safe_dump(data), base_dir=EXAMPLE.parent)


def test_a_gateway_converts_its_spans_where_its_config_says(tmp_path: Path) -> None:
    for conversion, in_child in ((None, True), ("process", True), ("thread", False)):
        config = _config(**({"span_conversion": conversion} if conversion else {}))
        telemetry = build_telemetry(config, db_path=tmp_path / f"{conversion}.duckdb")
        (exporter,) = [e for e in telemetry.exporters if isinstance(e, DuckDBSpanExporter)]
        assert (exporter.converter_pid is not None) is in_child, conversion
        telemetry.shutdown()
        assert exporter.converter_pid is None
    # the autopilot serves no requests: its few spans are converted on the exporter's thread
    telemetry = build_telemetry(_config(), db_path=tmp_path / "autopilot.duckdb", serves_requests=False)
    (exporter,) = [e for e in telemetry.exporters if isinstance(e, DuckDBSpanExporter)]
    assert exporter.converter_pid is None and exporter.converter_starts == 0
    telemetry.shutdown()
    with pytest.raises(ValueError, match="span_conversion"):
        _config(span_conversion="fork")
