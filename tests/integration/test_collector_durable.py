"""Durable delivery: the receiver acknowledges only what is on disk, a worker's exporter spools
what the collector does not take and replays it, and every loss is counted in ``dropped_spans``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SpanExportResult

from aperture.servers import listen_port
from collector import spool as spool_module
from collector.delivery import SpoolingOtlpExporter, claim_spool_dir
from collector.receiver import create_receiver_app, default_spool_dir
from collector.spool import Spool, encode_record
from collector.store import open_store
from tests.integration.test_collector_receiver import count, image_spans, lock_held_by_other_process

PROTOBUF = {"Content-Type": "application/x-protobuf"}


def counting_fsync(calls: list[int]) -> Callable[[int], None]:
    """os.fsync that also notes each call."""
    real = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        real(fd)

    return fsync


@contextmanager
def serving_on(app: FastAPI, port: int) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def _wait(predicate: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "store.duckdb"
    with open_store(path):
        pass
    return path


def dropped(db: Path) -> dict[str, int]:
    with open_store(db, read_only=True) as conn:
        return dict(conn.execute("SELECT reason, sum(count)::BIGINT FROM dropped_spans GROUP BY 1").fetchall())


# ----------------------------------------------------------------------------- receiver
def test_receiver_acknowledges_once_spooled_and_fsynced_not_once_written(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs: list[int] = []
    monkeypatch.setattr(spool_module.os, "fsync", counting_fsync(fsyncs))
    app = create_receiver_app(db)
    receiver = app.state.receiver
    body = encode_spans(image_spans(3)).SerializeToString()
    with serving_on(app, listen_port("127.0.0.1")) as url, lock_held_by_other_process(db):
        answer = httpx.post(f"{url}/v1/traces", content=body, headers=PROTOBUF)
        assert answer.status_code == 200
        # The store is locked: nothing written yet, yet the export is on disk and fsynced.
        assert receiver.counters.get("spans_written") == 0
        assert fsyncs and Spool(default_spool_dir(db)).pending_spans == 4
    assert receiver.flush(30)
    assert count(db) == 3 and count(db, "request_spans") == 1
    assert receiver.spool.pending_records == 0  # the write consumed it


KILLABLE_RECEIVER = """
import sys
from collector.receiver import serve_receiver
serve_receiver(sys.argv[1], port=int(sys.argv[2]))
"""


def test_receiver_killed_before_writing_replays_its_spool_on_start(db: Path, tmp_path: Path) -> None:
    port = listen_port("127.0.0.1")
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE_RECEIVER, str(db), str(port)], cwd=Path(__file__).parents[2])
    body = encode_spans(image_spans(5)).SerializeToString()
    try:
        with lock_held_by_other_process(db):
            _wait(lambda: _answers(f"http://127.0.0.1:{port}/healthz"))
            assert httpx.post(f"http://127.0.0.1:{port}/v1/traces", content=body, headers=PROTOBUF).status_code == 200
            proc.send_signal(signal.SIGKILL)  # acknowledged, never written to DuckDB
            proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert count(db) == 0
    app = create_receiver_app(db)
    with serving_on(app, listen_port("127.0.0.1")):
        assert app.state.receiver.flush(30)
        _wait(lambda: app.state.receiver.spool.pending_records == 0)
    assert count(db) == 5 and count(db, "request_spans") == 1


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_receiver_with_a_full_spool_answers_503_and_stores_nothing_twice(db: Path) -> None:
    body = encode_spans(image_spans(1)).SerializeToString()
    app = create_receiver_app(db, spool_bytes=len(encode_record(b"P" + body, 2)) + 10)
    with serving_on(app, listen_port("127.0.0.1")) as url, lock_held_by_other_process(db):
        first = httpx.post(f"{url}/v1/traces", content=body, headers=PROTOBUF)
        second = httpx.post(f"{url}/v1/traces", content=body, headers=PROTOBUF)
    assert (first.status_code, second.status_code) == (200, 503)
    assert second.headers["retry-after"] == "1"
    assert app.state.receiver.flush(30) and count(db) == 1


def test_drop_report_is_counted_and_stored(db: Path) -> None:
    app = create_receiver_app(db, restarts=2)
    with serving_on(app, listen_port("127.0.0.1")) as url:
        assert httpx.post(f"{url}/v1/dropped", json={"reason": "worker_spool_full", "count": 7}).status_code == 200
        assert httpx.post(f"{url}/v1/dropped", json={"reason": "x"}).status_code == 400
        assert httpx.post(f"{url}/v1/dropped", json={"reason": "x", "count": -1}).status_code == 400
        assert app.state.receiver.flush(30)
        metrics = httpx.get(f"{url}/metrics").text
    assert dropped(db) == {"worker_spool_full": 7}
    assert 'aperture_collector_spans_dropped_by_reason_total{reason="worker_spool_full"} 7' in metrics
    assert "aperture_collector_spans_dropped_total 7" in metrics
    assert "aperture_collector_restarts_total 2" in metrics  # as told by serve's supervisor


# ----------------------------------------------------------------------------- worker exporter
def test_exporter_spools_while_the_collector_is_down_and_replays_in_order(db: Path, tmp_path: Path) -> None:
    port = listen_port("127.0.0.1")
    exporter = SpoolingOtlpExporter(f"http://127.0.0.1:{port}/v1/traces", Spool(tmp_path / "w"), timeout_s=2)
    batches = [image_spans(2) for _ in range(4)]
    try:
        for batch in batches:
            assert exporter.export(batch) is SpanExportResult.SUCCESS  # durable in the spool
        assert exporter.spool.pending_spans == 12 and exporter.exported == 0
        with serving_on(create_receiver_app(db), port):
            _wait(lambda: exporter.spool.pending_records == 0)
            assert exporter.export(image_spans(1)) is SpanExportResult.SUCCESS  # straight through now
    finally:
        exporter.shutdown()
    assert exporter.exported == 14 and exporter.dropped == 0
    assert count(db) == 9 and count(db, "request_spans") == 5


def test_a_restarted_worker_replays_what_its_predecessor_spooled(db: Path, tmp_path: Path) -> None:
    port = listen_port("127.0.0.1")
    first = SpoolingOtlpExporter(f"http://127.0.0.1:{port}/v1/traces", Spool(tmp_path / "w"), timeout_s=2,
                                 shutdown_timeout_s=0.5)
    first.export(image_spans(3))
    started = time.monotonic()
    first.shutdown()  # the collector never answered: the batch stays on disk
    assert time.monotonic() - started < 5
    second = SpoolingOtlpExporter(f"http://127.0.0.1:{port}/v1/traces", Spool(tmp_path / "w"), timeout_s=2)
    try:
        with serving_on(create_receiver_app(db), port):
            _wait(lambda: second.spool.pending_records == 0)
    finally:
        second.shutdown()
    assert count(db) == 3


def test_full_worker_spool_drops_oldest_first_and_dropped_spans_counts_exactly(db: Path, tmp_path: Path) -> None:
    port = listen_port("127.0.0.1")
    bodies = [image_spans(n % 3 + 1) for n in range(12)]  # 2 to 4 spans a batch
    size = max(len(encode_record(b"T" + encode_spans(b).SerializeToString(), 0)) for b in bodies)
    spool = Spool(tmp_path / "w", max_bytes=5 * size, segment_bytes=size)  # one batch a segment, 5 kept
    exporter = SpoolingOtlpExporter(f"http://127.0.0.1:{port}/v1/traces", spool, timeout_s=2)
    try:
        for batch in bodies:
            exporter.export(batch)
        lost = exporter.dropped_by_reason.get("worker_spool_full", 0)
        assert lost > 0
        with serving_on(create_receiver_app(db), port):
            _wait(lambda: spool.pending_records == 0)
    finally:
        exporter.shutdown()
    total = sum(len(b) for b in bodies)
    stored = count(db) + count(db, "request_spans")
    assert stored + lost == total  # every span is either stored or counted as dropped
    assert dropped(db) == {"worker_spool_full": lost}
    with open_store(db, read_only=True) as conn:
        trace_ids = {r[0] for r in conn.execute("SELECT DISTINCT trace_id FROM request_spans").fetchall()}
    newest = {format(b[0].context.trace_id, "032x") for b in bodies[-3:]}
    oldest = format(bodies[0][0].context.trace_id, "032x")
    assert newest <= trace_ids and oldest not in trace_ids  # the oldest went first


def test_collector_refusing_a_batch_is_a_counted_drop(db: Path, tmp_path: Path) -> None:
    class Refuse(httpx.BaseTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            return httpx.Response(400 if request.url.path == "/v1/traces" else 200)

    exporter = SpoolingOtlpExporter("http://collector/v1/traces", Spool(tmp_path / "w"), transport=Refuse())
    try:
        assert exporter.export(image_spans(2)) is SpanExportResult.FAILURE
    finally:
        exporter.shutdown()
    assert exporter.dropped_by_reason == {"collector_refused_400": 3}
    assert exporter.spool.pending_records == 0
    assert json.loads((tmp_path / "w" / "drops.json").read_text()) == {}  # the report was delivered


def test_unreported_drops_survive_a_worker_restart(db: Path, tmp_path: Path) -> None:
    port = listen_port("127.0.0.1")
    url = f"http://127.0.0.1:{port}/v1/traces"
    record = len(encode_record(b"T" + encode_spans(image_spans(2)).SerializeToString(), 0))
    first = SpoolingOtlpExporter(url, Spool(tmp_path / "w", max_bytes=record), timeout_s=2, shutdown_timeout_s=0.2)
    first.export(image_spans(2))
    first.export(image_spans(2))  # pushes the first batch out
    first.shutdown()
    assert first.dropped_by_reason == {"worker_spool_full": 3}
    second = SpoolingOtlpExporter(url, Spool(tmp_path / "w", max_bytes=record), timeout_s=2)
    try:
        with serving_on(create_receiver_app(db), port) as base:
            _wait(lambda: httpx.get(f"{base}/healthz").json().get("spans_dropped", 0) == 3)
            _wait(lambda: second.spool.pending_records == 0)
    finally:
        second.shutdown()
    assert dropped(db) == {"worker_spool_full": 3} and count(db) == 2


def test_each_worker_claims_its_own_spool_slot(tmp_path: Path) -> None:
    a, fd_a = claim_spool_dir(tmp_path)
    b, fd_b = claim_spool_dir(tmp_path)
    assert (a.name, b.name) == ("worker-0", "worker-1")
    os.close(fd_a)  # that worker exited: its slot (and backlog) goes to the next one
    c, fd_c = claim_spool_dir(tmp_path)
    assert c == a
    os.close(fd_b)
    os.close(fd_c)


def test_restart_backoff_doubles_and_is_capped() -> None:
    from aperture.servers import restart_delay

    assert [restart_delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert restart_delay(20) == 30.0 and restart_delay(7, base_s=1, cap_s=10) == 10
