"""The OTLP/HTTP receiver served by uvicorn on loopback, fed by real OTLP clients."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aperture.servers import listen_port
from collector.receiver import create_receiver_app
from collector.store import fetch_df, open_store

PROTOBUF = {"Content-Type": "application/x-protobuf"}


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn on a free loopback port in a thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws="none", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def image_spans(n: int, service: str = "gateway") -> list[ReadableSpan]:
    """One chat request span with ``n`` child image spans, as the router emits them."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span(
        "chat gpt-4o",
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": "gpt-4o",
            "aperture.team": "docs",
            "aperture.image_count": n,
        },
    ):
        for i in range(n):
            with tracer.start_as_current_span(
                "image",
                attributes={
                    "image.index": i,
                    "image.sha256": f"{i:064x}",
                    "image.width": 1024 + i,
                    "image.height": 768,
                    "image.detail": "high",
                    "image.format": "png",
                    "image.tokens_billed": 765,
                    "image.cost_usd": 0.0019125,
                    "gen_ai.request.model": "gpt-4o",
                    "aperture.team": "docs",
                },
            ):
                pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def count(db: Path, table: str = "image_spans") -> int:
    with open_store(db, read_only=True) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "store.duckdb"
    with open_store(path):
        pass
    return path


@pytest.mark.parametrize(
    "compression", [Compression.NoCompression, Compression.Gzip, Compression.Deflate]
)
def test_official_otlp_exporter_rows_arrive_intact(db: Path, compression: Compression) -> None:
    app = create_receiver_app(db)
    with serving(app) as url:
        exporter = OTLPSpanExporter(
            endpoint=f"{url}/v1/traces", compression=compression, timeout=10
        )
        assert exporter.export(image_spans(5)) is SpanExportResult.SUCCESS
        exporter.shutdown()
        assert app.state.receiver.flush(20)
    with open_store(db, read_only=True) as conn:
        rows = fetch_df(conn, "SELECT * FROM image_spans ORDER BY image_index").to_dicts()
        request = fetch_df(conn, "SELECT * FROM request_spans").to_dicts()
        spans = fetch_df(conn, "SELECT service_name FROM spans").to_dicts()
    assert [r["image_index"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[3]["width"] == 1027 and rows[3]["height"] == 768
    assert rows[3]["sha256"] == f"{3:064x}" and rows[3]["detail"] == "high"
    assert rows[3]["tokens_billed"] == 765 and rows[3]["cost_usd"] == pytest.approx(0.0019125)
    assert rows[3]["model"] == "gpt-4o" and rows[3]["team"] == "docs"
    assert {r["request_span_id"] for r in rows} == {request[0]["span_id"]}
    assert request[0]["n_images"] == 5 and request[0]["status"] == "ok"
    assert {s["service_name"] for s in spans} == {"gateway"}


def test_json_body_with_hex_and_base64_ids(db: Path) -> None:
    message = MessageToDict(encode_spans(image_spans(2)))  # protobuf-JSON mapping: base64 ids
    hex_body = json.loads(json.dumps(message))
    for rs in hex_body["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
                span["traceId"] = "ab" * 16
    app = create_receiver_app(db)
    with serving(app) as url:
        first = httpx.post(f"{url}/v1/traces", json=message)
        second = httpx.post(
            f"{url}/v1/traces",
            content=gzip.compress(json.dumps(hex_body).encode()),
            headers={"Content-Type": "application/json; charset=utf-8", "Content-Encoding": "gzip"},
        )
        assert app.state.receiver.flush(20)
    assert first.status_code == 200 and first.json() == {}
    assert second.status_code == 200 and second.headers["content-type"].startswith(
        "application/json"
    )
    assert count(db) == 4
    assert count(db, "request_spans") == 2


def test_protobuf_answer_is_an_export_response(db: Path) -> None:
    body = encode_spans(image_spans(1)).SerializeToString()
    with serving(create_receiver_app(db)) as url:
        response = httpx.post(f"{url}/v1/traces", content=body, headers=PROTOBUF)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-protobuf"
    ExportTraceServiceResponse().ParseFromString(response.content)


def _raw_request(url: str, head: bytes, payload: bytes = b"") -> bytes:
    """Send headers (and optionally some body) over a bare socket; return the status line."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(head)

        def pump() -> None:
            # the server may hang up once it has refused the body
            with contextlib.suppress(OSError):
                conn.sendall(payload)

        sender = threading.Thread(target=pump, daemon=True)
        sender.start()
        data = b""
        while b"\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        sender.join(10)
    return data.split(b"\r\n")[0]


def test_bad_bodies_are_refused_and_store_stays_intact(db: Path) -> None:
    good = encode_spans(image_spans(3)).SerializeToString()
    app = create_receiver_app(db, max_body_bytes=1024 * 1024)
    with serving(app) as url:
        assert httpx.post(f"{url}/v1/traces", content=good, headers=PROTOBUF).status_code == 200
        assert app.state.receiver.flush(20)
        before = count(db), count(db, "spans")

        post = lambda body, headers: httpx.post(f"{url}/v1/traces", content=body, headers=headers)  # noqa: E731
        assert post(b"\xff\xff\xff\xff\xff", PROTOBUF).status_code == 400
        assert post(good[: len(good) // 2], PROTOBUF).status_code == 400
        assert post(good, {"Content-Type": "text/plain"}).status_code == 415
        assert post(good, {**PROTOBUF, "Content-Encoding": "br"}).status_code == 415
        assert post(b"not gzip at all", {**PROTOBUF, "Content-Encoding": "gzip"}).status_code == 400
        assert (
            post(gzip.compress(good)[:-12], {**PROTOBUF, "Content-Encoding": "gzip"}).status_code
            == 400
        )
        assert post(b'{"resourceSpans": [', {"Content-Type": "application/json"}).status_code == 400
        bad_id = {
            "resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz", "spanId": "1"}]}]}]
        }
        assert (
            post(json.dumps(bad_id).encode(), {"Content-Type": "application/json"}).status_code
            == 400
        )
        bomb = gzip.compress(b"\0" * (8 * 1024 * 1024))  # small on the wire, 8 MB inflated
        assert post(bomb, {**PROTOBUF, "Content-Encoding": "gzip"}).status_code == 413

        fifty_mb = 50 * 1000 * 1000
        head = (
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: %d\r\n\r\n" % fifty_mb
        )
        assert b" 413 " in _raw_request(url, head, b"\0" * 65536)
        chunked = (
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"%x\r\n%s\r\n" % (65536, b"\0" * 65536)
        assert b" 413 " in _raw_request(url, chunked, piece * 64)  # 4 MB, never finished

        assert app.state.receiver.flush(20)
        health = httpx.get(f"{url}/healthz").json()
        metrics = httpx.get(f"{url}/metrics").text
    assert (count(db), count(db, "spans")) == before
    assert health["status"] == "ok" and health["requests_refused_400"] == 6
    assert health["requests_refused_413"] == 3 and health["requests_refused_415"] == 2
    assert "aperture_collector_requests_refused_413_total 3.0\n" in metrics
    assert "aperture_collector_spans_written_total 4.0\n" in metrics


HOLD_LOCK = """
import sys, time, duckdb
conn = duckdb.connect(sys.argv[1])
print("locked", flush=True)
sys.stdin.readline()
conn.close()
"""


@contextmanager
def lock_held_by_other_process(path: Path) -> Iterator[None]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(10)


def test_full_queue_answers_503_with_retry_after(db: Path) -> None:
    app = create_receiver_app(db, queue_size=1, retry_after_s=2)
    receiver = app.state.receiver
    bodies = [encode_spans(image_spans(1)).SerializeToString() for _ in range(8)]
    answers: list[httpx.Response] = []
    with serving(app) as url, lock_held_by_other_process(db):
        first = httpx.post(f"{url}/v1/traces", content=bodies[0], headers=PROTOBUF)
        deadline = time.monotonic() + 10
        while receiver.writer.queue.qsize():  # the writer took batch 1 and waits on the lock
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # Before it blocks, the writer may still take a batch that is already queued (it joins
        # what is waiting into one write); once it waits on the lock, the queue of one fills.
        for body in bodies[1:]:
            answers.append(httpx.post(f"{url}/v1/traces", content=body, headers=PROTOBUF))
            if answers[-1].status_code != 200:
                break
    accepted = 1 + sum(a.status_code == 200 for a in answers)
    assert first.status_code == 200 and accepted >= 2
    assert answers[-1].status_code == 503 and answers[-1].headers["retry-after"] == "2"
    assert receiver.flush(30)
    assert count(db) == accepted and receiver.counters.get("spans_dropped") == 0


def test_forward_fans_out_to_a_second_receiver(tmp_path: Path) -> None:
    db_a, db_b = tmp_path / "a.duckdb", tmp_path / "b.duckdb"
    app_b = create_receiver_app(db_b)
    with serving(app_b) as url_b:
        app_a = create_receiver_app(db_a, forward_url=f"{url_b}/v1/traces")
        with serving(app_a) as url_a:
            exporter = OTLPSpanExporter(endpoint=f"{url_a}/v1/traces", compression=Compression.Gzip)
            assert exporter.export(image_spans(4)) is SpanExportResult.SUCCESS
            exporter.shutdown()
            assert app_a.state.receiver.flush(20)
            assert app_b.state.receiver.flush(20)
    assert count(db_a) == count(db_b) == 4
    assert app_a.state.receiver.counters.get("forwarded_requests") == 1


def test_forward_failures_are_counted_not_fatal(tmp_path: Path) -> None:
    dead_url = f"http://127.0.0.1:{listen_port('127.0.0.1')}/v1/traces"  # nothing listens there
    app = create_receiver_app(tmp_path / "a.duckdb", forward_url=dead_url, forward_timeout_s=2)
    with serving(app) as url:
        body = encode_spans(image_spans(2)).SerializeToString()
        assert httpx.post(f"{url}/v1/traces", content=body, headers=PROTOBUF).status_code == 200
        assert app.state.receiver.flush(20)
    assert count(tmp_path / "a.duckdb") == 2
    assert app.state.receiver.counters.get("forward_failures") == 1


def test_empty_request_is_accepted(db: Path) -> None:
    with serving(create_receiver_app(db)) as url:
        empty = ExportTraceServiceRequest().SerializeToString()
        assert httpx.post(f"{url}/v1/traces", content=empty, headers=PROTOBUF).status_code == 200
        assert httpx.get(f"{url}/healthz").status_code == 200


SERVE = """
import sys
from collector.receiver import serve_receiver
serve_receiver(sys.argv[1], host="127.0.0.1", port=int(sys.argv[2]))
"""


def test_serve_receiver_runs_uvicorn(tmp_path: Path) -> None:
    port = listen_port("127.0.0.1")
    db = tmp_path / "served.duckdb"
    log = (tmp_path / "receiver.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(db), str(port)],
        cwd=Path(__file__).resolve().parents[2],
        stdout=log,
        stderr=subprocess.STDOUT,  # uvicorn's access lines would go to stdout
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None
                time.sleep(0.1)
        body = encode_spans(image_spans(3)).SerializeToString()
        assert httpx.post(f"{url}/v1/traces", content=body, headers=PROTOBUF).status_code == 200
    finally:
        server.terminate()  # uvicorn drains the writer queue on shutdown
        server.wait(30)
        log.close()
    assert count(db) == 3
    # uvicorn's own INFO lines are there, but no access line per exporter batch.
    output = (tmp_path / "receiver.log").read_text()
    assert "Uvicorn running" in output and "POST /v1/traces" not in output, output
