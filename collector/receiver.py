"""OTLP/HTTP trace receiver: ``POST /v1/traces`` into the DuckDB store.

Any OTLP exporter (the official Python/Go/JS SDKs, an OTel Collector) can point
here. Answers, per the OTLP/HTTP spec:

- 200 with an ``ExportTraceServiceResponse`` in the request's encoding;
- 415 for a content type other than protobuf/JSON or an unknown encoding;
- 400 for a body that cannot be decoded (garbage, truncated, bad gzip/JSON);
- 413 for a body over ``max_body_bytes`` (Content-Length checked first, then
  counted while streaming and while inflating, so nothing big is buffered);
- 503 + Retry-After when the writer's queue or the spool is full.

An export is acknowledged only once it is durable: its (inflated) body is appended to the
receiver's spool (``collector.spool``) and fsynced, group-committed with the requests around
it, before the 200; the writer then batches spooled exports into DuckDB (at most one store
write a second) and consumes them from the spool. A receiver killed before writing replays its
spool into the store when it starts again. ``POST /v1/dropped`` (JSON ``{"reason", "count"}``)
lets a client report spans it lost, so they are counted in ``dropped_spans`` too.

``GET /healthz`` (JSON counters) and ``GET /metrics`` (Prometheus text) report
spans received/written/dropped, refusals per status code and forward failures.

Decoding runs in a worker thread; storing runs on the ``SpanWriter`` thread.

Example::

    app = create_receiver_app("aperture.duckdb", forward_url="http://127.0.0.1:4319/v1/traces")
    uvicorn.run(app, host="127.0.0.1", port=4318)
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from collector.columns import Batch, spans_to_batch
from collector.ingest import Counters, Forwarder, SpanWriter
from collector.otlp import OtlpDecodeError, decode_protobuf, from_otlp_json
from collector.spool import Spool, SpoolFull

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_CONTENT_TYPES = {PROTOBUF: PROTOBUF, "application/protobuf": PROTOBUF, JSON: JSON}
_ENCODINGS = {"", "identity", "gzip", "x-gzip", "deflate"}
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_SPOOL_BYTES = 512 * 1024 * 1024
_KIND = {PROTOBUF: b"P", JSON: b"J"}
_KIND_TYPE = {v: k for k, v in _KIND.items()}


class BodyTooLarge(Exception):
    pass


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo Content-Encoding without ever holding more than ``limit + 1`` output bytes."""
    if encoding in ("", "identity"):
        return body
    wbits = 16 + zlib.MAX_WBITS if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise OtlpDecodeError(f"bad {encoding} body: {exc}") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyTooLarge
    if not inflater.eof:
        raise OtlpDecodeError(f"truncated {encoding} body")
    return out


def decode_body(
    body: bytes, content_type: str, encoding: str, limit: int
) -> tuple[Batch, int, bytes]:
    """Body → (store batch, span count, inflated body for forwarding). Runs off the loop."""
    raw = inflate(body, encoding, limit)
    try:
        if content_type == PROTOBUF:
            spans = decode_protobuf(raw)
        else:
            spans = from_otlp_json(json.loads(raw))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        if isinstance(exc, OtlpDecodeError):
            raise
        raise OtlpDecodeError(f"undecodable body: {type(exc).__name__}") from exc
    return spans_to_batch(spans), len(spans), raw


def decode_spooled(payload: bytes) -> tuple[Batch, int]:
    """A spool record (one kind byte, then the inflated body) back into store rows."""
    content_type = _KIND_TYPE.get(payload[:1])
    if content_type is None:
        raise OtlpDecodeError(f"unknown spool record kind {payload[:1]!r}")
    rows, n_spans, _ = decode_body(payload[1:], content_type, "", len(payload))
    return rows, n_spans


def default_spool_dir(db_path: str | Path) -> Path:
    """``<db>.spool/receiver`` next to the store file."""
    path = Path(db_path)
    return path.with_name(path.name + ".spool") / "receiver"


def _status(
    code: int, message: str, content_type: str, headers: Mapping[str, str] | None = None
) -> Response:
    # OTLP/HTTP error bodies are google.rpc.Status in the request's encoding.
    if content_type == PROTOBUF:
        body = status_pb2.Status(code=code, message=message).SerializeToString()
        return Response(body, status_code=code, media_type=PROTOBUF, headers=headers)
    return Response(
        json.dumps({"code": code, "message": message}),
        status_code=code,
        media_type=JSON,
        headers=headers,
    )


def _success(content_type: str) -> Response:
    if content_type == PROTOBUF:
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type=PROTOBUF)
    return Response("{}", media_type=JSON)


class Receiver:
    """The receiver's state: writer, optional forwarder, counters (``app.state.receiver``)."""

    def __init__(
        self,
        db_path: str | Path,
        *,
        max_body_bytes: int,
        queue_size: int,
        forward_url: str | None,
        forward_headers: Mapping[str, str] | None,
        forward_timeout_s: float,
        lock_timeout_s: float,
        retry_after_s: int,
        spool_dir: str | Path | None = None,
        spool_bytes: int = DEFAULT_SPOOL_BYTES,
        restarts: int = 0,
    ) -> None:
        self.db_path = Path(db_path)
        self.max_body_bytes = max_body_bytes
        self.retry_after_s = retry_after_s
        self.restarts = restarts
        self.counters = Counters()
        self.spool = Spool(spool_dir or default_spool_dir(db_path), max_bytes=spool_bytes)
        self.writer = SpanWriter(
            db_path, self.counters, queue_size=queue_size, lock_timeout_s=lock_timeout_s,
            spool=self.spool, decode=decode_spooled,
        )
        self.forwarder = (
            Forwarder(
                forward_url, self.counters, headers=forward_headers, timeout_s=forward_timeout_s
            )
            if forward_url
            else None
        )

    def start(self) -> None:
        self.writer.replay_until = self.spool.end()
        self.writer.start()
        if self.forwarder:
            self.forwarder.start()

    def stop(self) -> None:
        self.writer.stop()
        if self.forwarder:
            self.forwarder.stop()
        self.spool.close()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until every accepted span is stored (and forwarded, when configured)."""
        done = self.writer.flush(timeout_s)
        if self.forwarder:
            done = self.forwarder.flush(timeout_s) and done
        return done

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "queue_depth": self.writer.queue.qsize(),
            "spool_bytes": self.spool.size_bytes,
            "collector_restarts": self.restarts,
            **self.counters.snapshot(),
        }

    def prometheus_text(self) -> str:
        """Queue depth and counters in the Prometheus text format, through prometheus-client
        (a registry of its own, read at scrape time: no global state)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_ReceiverMetrics(self))
        return generate_latest(registry).decode()

    async def handle(self, request: Request) -> Response:
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        content_type = _CONTENT_TYPES.get(media)
        reply_type = content_type or JSON
        if content_type is None:
            return self._refuse(415, f"unsupported content type {media!r}", reply_type)
        encoding = request.headers.get("content-encoding", "").strip().lower()
        if encoding not in _ENCODINGS:
            return self._refuse(415, f"unsupported content encoding {encoding!r}", reply_type)
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                return self._refuse(400, "invalid Content-Length", reply_type)
            if int(declared) > self.max_body_bytes:
                return self._refuse(413, "body too large", reply_type)
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > self.max_body_bytes:
                    return self._refuse(413, "body too large", reply_type)
        except ClientDisconnect:
            return self._refuse(400, "client disconnected before the body ended", reply_type)
        try:
            rows, n_spans, raw = await run_in_threadpool(
                decode_body, bytes(body), content_type, encoding, self.max_body_bytes
            )
        except BodyTooLarge:
            return self._refuse(413, "body too large once decompressed", reply_type)
        except OtlpDecodeError as exc:
            return self._refuse(400, str(exc), reply_type)
        if n_spans and not await self._make_durable(rows, n_spans, raw, content_type):
            self.counters.add("spans_refused", n_spans)
            headers = {"Retry-After": str(self.retry_after_s)}
            return self._refuse(503, "receiver busy, retry later", reply_type, headers)
        self.counters.add("requests_accepted")
        self.counters.add("spans_received", n_spans)
        if self.forwarder and n_spans:
            self.forwarder.submit(raw, content_type)
        return _success(content_type)

    async def _make_durable(self, rows: Batch, n_spans: int, raw: bytes, content_type: str) -> bool:
        """Spool (then fsync) and queue the export; False when there is no room (answer 503).

        Runs its checks and appends on the event loop, so queue order is spool order; the fsync
        runs in a thread and covers every export appended before it (group commit).
        """
        if self.writer.queue.full():
            return False
        try:
            position, _ = self.spool.append(_KIND[content_type] + raw, n_spans, drop_oldest=False)
        except SpoolFull:
            return False
        if not self.writer.submit(rows, n_spans, position):  # only this loop puts: cannot be full
            raise RuntimeError("the writer queue filled between check and put")
        await run_in_threadpool(self.spool.sync)
        return True

    async def report_dropped(self, request: Request) -> Response:
        """A client's own loss (its spool overflowed, …): counted here and in ``dropped_spans``."""
        try:
            report = json.loads(await request.body())
            reason, count = str(report["reason"])[:200], int(report["count"])
        except (ValueError, KeyError, TypeError):
            return self._refuse(400, "expected JSON {reason, count}", JSON)
        if count < 0:
            return self._refuse(400, "count must not be negative", JSON)
        await run_in_threadpool(self.writer.report_dropped, reason, count)
        return Response("{}", media_type=JSON)

    def _refuse(
        self, code: int, message: str, reply_type: str, headers: Mapping[str, str] | None = None
    ) -> Response:
        self.counters.add(f"requests_refused_{code}")
        return _status(code, message, reply_type, headers)


def create_receiver_app(
    db_path: str | Path,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    queue_size: int = 64,
    forward_url: str | None = None,
    forward_headers: Mapping[str, str] | None = None,
    forward_timeout_s: float = 10.0,
    lock_timeout_s: float = 30.0,
    retry_after_s: int = 1,
    spool_dir: str | Path | None = None,
    spool_bytes: int = DEFAULT_SPOOL_BYTES,
    restarts: int = 0,
) -> FastAPI:
    """Build the receiver app; its ``Receiver`` is at ``app.state.receiver``.

    ``spool_dir`` defaults to ``<db>.spool/receiver``; ``restarts`` is how many times a
    supervisor (``aperture serve --workers``) restarted this collector, for /metrics.
    """
    receiver = Receiver(
        db_path,
        max_body_bytes=max_body_bytes,
        queue_size=queue_size,
        forward_url=forward_url,
        forward_headers=forward_headers,
        forward_timeout_s=forward_timeout_s,
        lock_timeout_s=lock_timeout_s,
        retry_after_s=retry_after_s,
        spool_dir=spool_dir,
        spool_bytes=spool_bytes,
        restarts=restarts,
    )
    return receiver_app(receiver)


def receiver_app(receiver: Receiver) -> FastAPI:
    """The HTTP face of ``receiver``: OTLP traces, drop reports, health and metrics; the app's
    lifespan starts and stops the receiver's writer."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        receiver.start()
        try:
            yield
        finally:
            await run_in_threadpool(receiver.stop)

    app = FastAPI(title="Aperture OTLP receiver", lifespan=lifespan)
    app.state.receiver = receiver

    @app.post("/v1/traces")
    async def traces(request: Request) -> Response:
        return await receiver.handle(request)

    @app.post("/v1/dropped")
    async def dropped(request: Request) -> Response:
        return await receiver.report_dropped(request)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return receiver.health()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(receiver.prometheus_text(), media_type="text/plain; version=0.0.4")

    return app


def serve_receiver(
    db: str | Path,
    host: str = "127.0.0.1",
    port: int = 4318,
    forward: str | None = None,
    **options: Any,
) -> None:
    """Run the receiver with uvicorn until interrupted (``aperture collector``).

    No access log: every exporter batch is one POST, so a line each would only cost CPU (errors
    are still logged). ``loop``/``http`` "auto" take uvloop and httptools when installed (the
    ``uvicorn[standard]`` fast paths) and asyncio/h11 otherwise.
    """
    import uvicorn

    uvicorn.run(create_receiver_app(db, forward_url=forward, **options), host=host, port=port,
                access_log=False, loop="auto", http="auto")


class _ReceiverMetrics(Collector):
    """The receiver's live numbers as metric families, read when scraped."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("aperture_collector_queue_depth", "Span batches waiting to be written.",
                                value=self.receiver.writer.queue.qsize())
        yield GaugeMetricFamily("aperture_collector_spool_bytes", "Acknowledged span batches not yet in the store, bytes.",
                                value=self.receiver.spool.size_bytes)
        yield CounterMetricFamily("aperture_collector_restarts", "Times serve restarted a dead collector.",
                                  value=self.receiver.restarts)
        reasons = CounterMetricFamily("aperture_collector_spans_dropped_by_reason", "Spans dropped, by reason.",
                                      labels=["reason"])
        for name, value in sorted(self.receiver.counters.snapshot().items()):
            if name.startswith("spans_dropped:"):
                reasons.add_metric([name.split(":", 1)[1]], value)
                continue
            yield CounterMetricFamily(f"aperture_collector_{name}", f"Collector {name.replace('_', ' ')}.", value=value)
        yield reasons
