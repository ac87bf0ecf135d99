"""``DuckDBSpanExporter``: an OTel ``SpanExporter`` that writes spans into the store.

Use it through the stock ``BatchSpanProcessor``::

    provider = TracerProvider()
    exporter = DuckDBSpanExporter("aperture.duckdb")
    provider.add_span_processor(BatchSpanProcessor(exporter))

Each ``export`` opens the file, bulk-inserts the batch in one transaction and
closes it, so other processes (``aperture eval``, ``aperture guard``) can take
their turn between batches. Inserts ignore (trace_id, span_id) already stored,
so re-exporting a batch is harmless. A batch that still cannot be written
after ``max_attempts`` is counted in ``dropped`` (for /metrics) and, when the
file can be reached, in the ``dropped_spans`` table (at once, or together
with the next batch that gets through); loss is never silent.

The writes run on one DuckDB thread (``ONE_THREAD``): the exporter shares its process with
the gateway it records.

Threading: ``BatchSpanProcessor`` calls ``export`` from its one worker thread;
counters are guarded by a lock so /metrics may read them from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from collector.columns import spans_to_batch
from collector.otlp import from_readable_span
from collector.semconv import utc_now
from collector.store import open_store, record_dropped, write_tables

log = logging.getLogger(__name__)
#: A batch is a few hundred spans: DuckDB's worker threads (one per core by default) gain
#: nothing on it and take CPU from the requests the gateway serves beside this thread
#: (0.2–0.3 ms of gateway CPU per request at 144 KB, docs/benchmarks.md "Gateway overhead").
ONE_THREAD = "SET threads = 1"


class DuckDBSpanExporter(SpanExporter):
    """Write finished spans to the DuckDB store at ``path`` (see module docstring)."""

    def __init__(
        self,
        path: str | Path,
        *,
        lock_timeout_s: float = 10.0,
        max_attempts: int = 3,
        retry_backoff_s: float = 0.2,
    ) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        self.max_attempts = max(1, max_attempts)
        self.retry_backoff_s = retry_backoff_s
        self._lock = threading.Lock()
        self._dropped = 0
        self._exported = 0
        self._dropped_by_reason: dict[str, int] = {}
        self._shutdown = False
        self._unrecorded: list[dict[str, object]] = []

    @property
    def dropped(self) -> int:
        """Spans this exporter failed to store since it started."""
        with self._lock:
            return self._dropped

    @property
    def exported(self) -> int:
        with self._lock:
            return self._exported

    @property
    def dropped_by_reason(self) -> dict[str, int]:
        with self._lock:
            return dict(self._dropped_by_reason)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        if self._shutdown:
            self._count_dropped(len(spans), "exporter_shutdown", persist=False)
            return SpanExportResult.FAILURE
        try:
            rows = spans_to_batch([from_readable_span(span) for span in spans])
        except Exception:
            log.exception("could not convert %d spans to rows", len(spans))
            self._count_dropped(len(spans), "conversion_error", persist=True)
            return SpanExportResult.FAILURE
        last: Exception | None = None
        for attempt in range(self.max_attempts):
            with self._lock:
                unrecorded = list(self._unrecorded)
            try:
                with open_store(self.path, timeout_s=self.lock_timeout_s) as conn:
                    conn.execute(ONE_THREAD)
                    write_tables(conn, {**rows, "dropped_spans": unrecorded})
            except Exception as exc:  # lock timeout, disk full, bad file: all retried, then counted
                last = exc
                if attempt + 1 < self.max_attempts:
                    time.sleep(self.retry_backoff_s * 2**attempt)
                continue
            with self._lock:
                self._exported += len(spans)
                del self._unrecorded[: len(unrecorded)]
            return SpanExportResult.SUCCESS
        log.error("dropping %d spans after %d attempts: %s", len(spans), self.max_attempts, last)
        self._count_dropped(len(spans), f"store_error:{type(last).__name__}", persist=True)
        return SpanExportResult.FAILURE

    def _count_dropped(self, count: int, reason: str, *, persist: bool) -> None:
        with self._lock:
            self._dropped += count
            self._dropped_by_reason[reason] = self._dropped_by_reason.get(reason, 0) + count
        if not persist:
            return
        try:
            with open_store(self.path, timeout_s=min(1.0, self.lock_timeout_s)) as conn:
                record_dropped(conn, reason, count)
        except Exception:  # written along with the next batch that gets through
            with self._lock:
                self._unrecorded.append({"ts": utc_now(), "reason": reason, "count": count})

    def shutdown(self) -> None:
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        # Every export is written synchronously; nothing is buffered here.
        return True
