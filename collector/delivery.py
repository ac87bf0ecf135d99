"""``SpoolingOtlpExporter``: OTLP/HTTP export that keeps what the collector does not take.

A gateway worker's spans go by OTLP/HTTP to the collector. When the collector is down (killed,
restarting) the stock exporter retries for a while and then drops the batch, silently. This
exporter instead appends every batch the collector does not acknowledge to a write-ahead spool
(``collector.spool``) and a background thread replays the spool, oldest first, whenever the
collector answers again; a batch leaves the spool only once acknowledged. While anything is
spooled, new batches queue behind it, so the collector receives them in order. A worker that
restarts finds its predecessor's spool and replays it.

Use it as any ``SpanExporter`` (behind ``BatchSpanProcessor``)::

    exporter = SpoolingOtlpExporter("http://127.0.0.1:4318/v1/traces", Spool("spool/worker-0"))
    provider.add_span_processor(BatchSpanProcessor(exporter))

Losses are counted (``dropped``, ``dropped_by_reason``) and reported to the collector's
``POST /v1/dropped``, which writes them to ``dropped_spans``. Counts not yet reported are kept
in ``drops.json`` beside the spool (not in it, where a full spool could drop the report itself),
so a report survives a restart too. The losses: a spool that overflows (oldest dropped), a batch the collector refuses as
undecodable (400/413), a spool record damaged by a crash.

Export never waits long: one POST with a short timeout, no retries in the caller's thread (the
stock exporter's backoff would hold ``BatchSpanProcessor``'s thread for a minute and let its
queue overflow, a loss nobody counts).
"""

from __future__ import annotations

import fcntl
import gzip
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from collector.spool import Spool, SpoolFull

log = logging.getLogger(__name__)

TRACES = b"T"  # payload: ExportTraceServiceRequest protobuf
_REFUSED = {400, 413, 415}  # the collector will never take this body: dropped, counted


def dropped_url(traces_url: str) -> str:
    """The collector's drop-report endpoint next to its ``/v1/traces``."""
    base = traces_url[: -len("/v1/traces")] if traces_url.endswith("/v1/traces") else traces_url.rstrip("/")
    return base + "/v1/dropped"


class SpoolingOtlpExporter(SpanExporter):
    """See the module docstring. ``timeout_s`` bounds one POST; replay backs off up to ``max_backoff_s``."""

    def __init__(
        self,
        endpoint: str,
        spool: Spool,
        *,
        headers: Mapping[str, str] | None = None,
        gzip_body: bool = False,
        timeout_s: float = 5.0,
        max_backoff_s: float = 5.0,
        shutdown_timeout_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.drop_endpoint = dropped_url(endpoint)
        self.spool = spool
        self.gzip_body = gzip_body
        self.max_backoff_s = max_backoff_s
        self.shutdown_timeout_s = shutdown_timeout_s
        self._client = httpx.Client(timeout=timeout_s, headers=dict(headers or {}), transport=transport, trust_env=False)
        self._lock = threading.Lock()  # one delivery at a time: export and replay keep order
        self._counts_lock = threading.Lock()
        self._replay_lock = threading.Lock()
        self._dropped_by_reason: dict[str, int] = {}
        self._exported = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._drops_file = spool.dir / "drops.json"
        self._unreported = self._load_unreported()
        if spool.corrupt_records:
            self._count_drop("worker_spool_corrupt", spool.corrupt_spans)
        self._thread = threading.Thread(target=self._replay_loop, name="aperture-span-spool", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ counters
    @property
    def dropped(self) -> int:
        with self._counts_lock:
            return sum(self._dropped_by_reason.values())

    @property
    def dropped_by_reason(self) -> dict[str, int]:
        with self._counts_lock:
            return dict(self._dropped_by_reason)

    @property
    def exported(self) -> int:
        with self._counts_lock:
            return self._exported

    def _count_drop(self, reason: str, count: int) -> None:
        """Count a loss and keep it for the collector's ``dropped_spans`` until reported."""
        if count <= 0:
            return
        log.error("dropped %d spans: %s", count, reason)
        with self._counts_lock:
            self._dropped_by_reason[reason] = self._dropped_by_reason.get(reason, 0) + count
            self._unreported[reason] = self._unreported.get(reason, 0) + count
            self._save_unreported()
        self._wake.set()

    def _load_unreported(self) -> dict[str, int]:
        try:
            data = json.loads(self._drops_file.read_text())
            return {str(k): int(v) for k, v in data.items() if int(v) > 0}
        except (OSError, ValueError, AttributeError):
            return {}

    def _save_unreported(self) -> None:
        tmp = self._drops_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._unreported))
        os.replace(tmp, self._drops_file)

    def _report_drops(self) -> bool:
        """POST each unreported reason's count; True when nothing is left to report."""
        with self._counts_lock:
            pending = dict(self._unreported)
        for reason, count in pending.items():
            try:
                answer = self._client.post(self.drop_endpoint, json={"reason": reason, "count": count})
            except httpx.HTTPError:
                return False
            if answer.status_code != 200:
                return False
            with self._counts_lock:
                left = self._unreported.get(reason, 0) - count
                if left > 0:
                    self._unreported[reason] = left
                else:
                    self._unreported.pop(reason, None)
                self._save_unreported()
        return True

    def _nothing_pending(self) -> bool:
        with self._counts_lock:
            unreported = bool(self._unreported)
        return not unreported and not self.spool.pending_records

    # ------------------------------------------------------------------ SpanExporter
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        try:
            body = encode_spans(spans).SerializeToString()
        except Exception:
            log.exception("could not encode %d spans", len(spans))
            self._count_drop("worker_encode_error", len(spans))
            return SpanExportResult.FAILURE
        with self._lock:
            if not self.spool.pending_records and not self._stopping.is_set():
                status = self._post(TRACES + body)
                if status == 200:
                    self._add_exported(len(spans))
                    return SpanExportResult.SUCCESS
                if status in _REFUSED:
                    self._count_drop(f"collector_refused_{status}", len(spans))
                    return SpanExportResult.FAILURE
            self._spool(TRACES + body, len(spans))
        self._wake.set()
        return SpanExportResult.SUCCESS  # durable here; the replay thread delivers it

    def _spool(self, payload: bytes, n_spans: int) -> None:
        try:
            _, dropped = self.spool.append(payload, n_spans)
        except SpoolFull:
            self._count_drop("worker_spool_full", n_spans)
            return
        if dropped:
            self._count_drop("worker_spool_full", dropped)

    def _add_exported(self, n: int) -> None:
        with self._counts_lock:
            self._exported += n

    def _post(self, payload: bytes) -> int | None:
        """POST one spool payload; the HTTP status, or None when the collector did not answer."""
        body, headers = payload[1:], {"Content-Type": "application/x-protobuf"}
        if self.gzip_body:
            body, headers["Content-Encoding"] = gzip.compress(body, 1), "gzip"
        try:
            return self._client.post(self.endpoint, content=body, headers=headers).status_code
        except httpx.HTTPError as exc:
            log.debug("collector at %s did not answer: %s", self.endpoint, exc)
            return None

    # ------------------------------------------------------------------ replay
    def replay_once(self) -> bool:
        """Deliver spooled records oldest first until one is not accepted; True when the spool is empty.

        The lock is held per record, not for the whole backlog, so ``export`` (which spools
        behind a non-empty backlog) never waits longer than one POST.
        """
        with self._replay_lock:  # the replay thread, force_flush and shutdown: one at a time
            return self._replay()

    def _replay(self) -> bool:
        for position, n_spans, payload in self.spool.records():
            with self._lock:
                status = self._post(payload)
                if status is None or (status not in _REFUSED and status != 200):
                    self.spool.sync()  # it stays a while: make it durable
                    return False
                self.spool.consume(position)
            if status == 200:
                self._add_exported(n_spans)
            else:
                self._count_drop(f"collector_refused_{status}", n_spans)
        self.spool.sync()
        return self._report_drops() and self._nothing_pending()

    def _replay_loop(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            self._wake.wait(None if self._nothing_pending() else backoff)
            self._wake.clear()
            if self._stopping.is_set():
                return
            backoff = 0.1 if self.replay_once() else min(backoff * 2, self.max_backoff_s)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Try to deliver the backlog now; what is left stays in the (fsynced) spool."""
        return self.replay_once()

    def shutdown(self) -> None:
        """Deliver the backlog, waiting up to ``shutdown_timeout_s`` for a collector that is
        restarting; whatever is still undelivered stays in the spool for the next process."""
        deadline = time.monotonic() + self.shutdown_timeout_s
        delay = 0.1
        while not self.replay_once() and time.monotonic() + delay < deadline:
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        if self.spool.pending_records:
            log.warning("%d spans stay in %s for the next start", self.spool.pending_spans, self.spool.dir)
        self._stopping.set()
        self._wake.set()
        self._thread.join(10)
        self.spool.close()
        self._client.close()


def claim_spool_dir(root: str | Path, prefix: str = "worker-") -> tuple[Path, int]:
    """The first ``<root>/<prefix>N`` no live process holds (an flock on its ``lock`` file).

    A restarted worker takes a free slot, usually its predecessor's, and replays what is there.
    The returned descriptor holds the lock for as long as the process keeps it open.
    """
    root = Path(root)
    for n in itertools.count():
        slot = root / f"{prefix}{n}"
        slot.mkdir(parents=True, exist_ok=True)
        fd = os.open(slot / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return slot, fd
    raise AssertionError("unreachable")


def exporter_from_env(spool_root: str | Path, max_bytes: int) -> SpoolingOtlpExporter:
    """A spooling exporter configured by the standard OTLP variables (endpoint, headers, gzip)."""
    from opentelemetry.util.re import parse_env_headers

    env = os.environ
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318").rstrip("/") + "/v1/traces"
    )
    headers = parse_env_headers(env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or env.get("OTEL_EXPORTER_OTLP_HEADERS", ""), liberal=True)
    compression = env.get("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION") or env.get("OTEL_EXPORTER_OTLP_COMPRESSION", "")
    slot, _lock_fd = claim_spool_dir(spool_root)  # held until the process exits
    log.info("spans the collector does not take wait in %s", slot)
    return SpoolingOtlpExporter(endpoint, Spool(slot, max_bytes=max_bytes), headers=headers, gzip_body=compression == "gzip")
