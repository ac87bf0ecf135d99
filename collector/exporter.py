"""``DuckDBSpanExporter``: an OTel ``SpanExporter`` that writes spans into the store.

Use it through the stock ``BatchSpanProcessor``::

    provider = TracerProvider()
    exporter = DuckDBSpanExporter("aperture.duckdb")
    provider.add_span_processor(BatchSpanProcessor(exporter))

Each ``export`` bulk-inserts the batch in one transaction. The file is opened
for at most ``hold_s`` (2 s) of batches at a time, then closed and left alone
for at least ``release_s`` (0.5 s), so other processes (``aperture eval``,
``aperture guard``, waiting in ``open_store``) take their turn between holds.
Opening and closing a DuckDB file costs ≈15 ms of CPU each time, which per
500 ms batch was a quarter of the gateway's CPU per request at 2 MB images
(docs/benchmarks.md "Gateway overhead"); ``hold_s=0`` opens and closes it for
every batch. A held connection is closed by a timer, on a failed write, by
``force_flush`` (the stock ``BatchSpanProcessor.force_flush`` does not call it:
see ``aperture.wiring.Telemetry.flush``) and by ``shutdown``. A child process
forked while it was held never uses nor closes it, and its own exports fail
(counted as dropped): the parent owns the file. Inserts ignore (trace_id,
span_id) already stored, so re-exporting a batch is harmless. A batch that still cannot be written
after ``max_attempts`` is counted in ``dropped`` (for /metrics) and, when the
file can be reached, in the ``dropped_spans`` table (at once, or together
with the next batch that gets through); loss is never silent.

The writes run on one DuckDB thread (``ONE_THREAD``): the exporter shares its process with
the gateway it records. For the same reason, with ``convert_in="process"`` (what ``aperture
serve`` uses, from ``telemetry.span_conversion``) the spans become rows in a child process
(``collector.converter``): ``export`` only reads them into plain values (``compact_spans``), and
writes the rows that come back. A converter that fails or dies costs nothing: the batch is then
converted here, and a new converter is started for the next one.

Threading: ``BatchSpanProcessor`` calls ``export`` from its one worker thread;
counters are guarded by a lock so /metrics may read them from any thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import duckdb
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from collector.columns import spans_to_batch
from collector.converter import ConverterGone, ConverterProcess, ConverterResting
from collector.sdkspans import CompactBatch, compact_spans, records_from_compact
from collector.semconv import utc_now
from collector.store import (
    StoreError,
    close_store,
    connect,
    open_store,
    record_dropped,
    write_tables,
)

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
        hold_s: float = 2.0,
        release_s: float = 0.5,
        convert_in: Literal["thread", "process"] = "thread",
    ) -> None:
        if convert_in not in ("thread", "process"):
            raise ValueError(f"convert_in must be 'thread' or 'process', not {convert_in!r}")
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
        self.hold_s = hold_s
        self.release_s = release_s
        self._store = _HeldStore(self.path, lock_timeout_s, hold_s, release_s)
        self._converter: ConverterProcess | None = None
        if convert_in == "process":
            self._converter = ConverterProcess()
            try:
                self._converter.start()
            except ConverterGone as exc:  # the first batch tries again, or converts here
                log.warning("%s", exc)
        self._owner_pid = os.getpid()

    @property
    def dropped(self) -> int:
        """Spans this exporter failed to store since it started."""
        with self._lock:
            return self._dropped

    @property
    def converter_pid(self) -> int | None:
        """The converter process's id while it runs (``convert_in="process"``), else ``None``."""
        return self._converter.pid if self._converter is not None else None

    @property
    def converter_starts(self) -> int:
        """How many converter processes this exporter started (a dead one is replaced on demand)."""
        return self._converter.starts if self._converter is not None else 0

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
            rows = self._rows(compact_spans(spans))
        except Exception:
            log.exception("could not convert %d spans to rows", len(spans))
            self._count_dropped(len(spans), "conversion_error", persist=True)
            return SpanExportResult.FAILURE
        last: Exception | None = None
        for attempt in range(self.max_attempts):
            with self._lock:
                unrecorded = list(self._unrecorded)
            try:
                self._store.write({**rows, "dropped_spans": unrecorded})
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

    def _rows(self, batch: CompactBatch) -> dict[str, Any]:
        """The batch's rows, from the converter process when there is one and it answers."""
        if self._converter is not None and os.getpid() == self._owner_pid:
            try:
                return self._converter.convert(batch)
            except ConverterResting:  # said once, when it failed
                pass
            except (ConverterGone, ValueError) as exc:  # converted here instead; nothing is lost
                log.warning("%s; converting %d spans in this process", exc, len(batch[1]))
        return spans_to_batch(records_from_compact(batch))

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
        if self._converter is not None and os.getpid() == self._owner_pid:
            self._converter.close()
        self._store.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Every export is written synchronously, so nothing is buffered here; a held store is
        let go, so that whoever flushed may open the file at once (from any process)."""
        self._store.close()
        return True


#: Connections a forked child inherited: never used, never closed (closing would checkpoint a
#: file the parent still writes), only kept from the garbage collector.
_INHERITED: list[duckdb.DuckDBPyConnection] = []
_HELD: weakref.WeakSet[_HeldStore] = weakref.WeakSet()


def _unlock_in_child() -> None:
    # A fork taken while the exporter thread held a store's lock would leave it held for good.
    for store in list(_HELD):
        store._lock = threading.Lock()


os.register_at_fork(after_in_child=_unlock_in_child)


class _HeldStore:
    """One read-write connection to the store, kept for ``hold_s`` after it was opened.

    ``write`` runs on the exporter's thread, the closing timer on its own; a lock keeps them
    apart. After a close the file is left free for ``release_s`` before the next open.
    """

    def __init__(self, path: Path, lock_timeout_s: float, hold_s: float, release_s: float) -> None:
        self.path, self.lock_timeout_s, self.hold_s, self.release_s = path, lock_timeout_s, hold_s, release_s
        self._lock = threading.Lock()
        self._conn: duckdb.DuckDBPyConnection | None = None
        self._pid = 0
        self._opened_at = 0.0
        self._closed_at = float("-inf")
        self._forked = False
        _HELD.add(self)

    def write(self, tables: dict[str, Any]) -> None:
        with self._lock:
            if self._conn is not None and self._pid != os.getpid():
                _INHERITED.append(self._conn)
                self._conn, self._forked = None, True
            if self._forked:
                # DuckDB would hand this process the inherited database again for the same file
                # (its instance cache was copied too), without the parent's file lock.
                raise StoreError("forked while the parent held the store; the parent writes it")
            conn = self._conn or self._open()
            try:
                write_tables(conn, tables)
            except BaseException:
                self._close_locked()  # a connection that failed a write is not reused
                raise
            if self.hold_s <= 0 or time.monotonic() - self._opened_at >= self.hold_s:
                self._close_locked()

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _open(self) -> duckdb.DuckDBPyConnection:
        pause = self._closed_at + self.release_s - time.monotonic()
        if self.hold_s > 0 and pause > 0:
            time.sleep(pause)  # the file stays free for a while: others get their turn
        conn = connect(self.path, timeout_s=self.lock_timeout_s)
        try:
            conn.execute(ONE_THREAD)
        except BaseException:
            close_store(conn)
            raise
        self._conn, self._pid, self._opened_at = conn, os.getpid(), time.monotonic()
        if self.hold_s > 0:
            timer = threading.Timer(self.hold_s, self._expire, args=(conn,))
            timer.daemon = True
            timer.start()
        return conn

    def _expire(self, conn: duckdb.DuckDBPyConnection) -> None:
        with self._lock:
            if self._conn is conn and self._pid == os.getpid():
                self._close_locked()

    def _close_locked(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._pid != os.getpid():
            _INHERITED.append(conn)
            self._forked = True
            return
        self._closed_at = time.monotonic()
        try:
            close_store(conn)
        except Exception:  # the batch is committed or rolled back already; nothing is lost
            log.exception("closing the store failed")
