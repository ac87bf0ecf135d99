"""Background workers behind the OTLP receiver: the store writer and the forwarder.

Both own one daemon thread and one bounded queue, so the event loop only ever
does a non-blocking ``put``. A full writer queue is the receiver's signal to
answer 503 + Retry-After (the client retries); a full forward queue, or any
forwarding failure, is counted and never delays ingestion.

Threading: ``submit`` may be called from any thread; each worker's state is
touched only by its own thread, except the counters, which are lock-guarded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from collector.columns import Batch, merge_batches
from collector.semconv import utc_now
from collector.spool import Position, Spool
from collector.store import open_store, write_tables

log = logging.getLogger(__name__)

Rows = Batch  # what collector.columns.spans_to_batch returns
_STOP = object()


@dataclass
class Item:
    """One accepted export (its rows, and where it ends in the receiver's spool), or a drop report."""

    rows: Rows | None = None
    n_spans: int = 0
    position: Position | None = None
    drops: list[tuple[str, int]] = field(default_factory=list)


class Counters:
    """Thread-safe named counters (read by /healthz and /metrics)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = {}

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0) + amount

    def get(self, name: str) -> int:
        with self._lock:
            return self._values.get(name, 0)

    def dropped(self, reason: str, count: int) -> None:
        """``spans_dropped`` and ``spans_dropped:<reason>`` (a label in /metrics)."""
        self.add("spans_dropped", count)
        self.add(f"spans_dropped:{reason}", count)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class _Worker:
    def __init__(self, name: str, queue_size: int) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, queue_size))
        self._name = name
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def start(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Finish what is queued, then end the thread."""
        thread = self._thread
        if thread is None:
            return
        self.queue.put(_STOP)
        thread.join(timeout_s)
        self._thread = None

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything submitted so far has been handled."""
        deadline = time.monotonic() + timeout_s
        while self.queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _loop(self) -> None:
        raise NotImplementedError


class SpanWriter(_Worker):
    """Writes decoded row batches to the store, merging queued requests per write.

    Each write opens the store and closes it again (≈12 ms of CPU for DuckDB alone, before a
    row is written), so that other processes can open the file between writes. Under load that
    open would be paid for every exporter's batch; instead, a write comes at most once per
    ``min_write_interval_s``, taking everything that arrived meanwhile (at most
    ``max_batch_spans``; a full batch is written at once). The first batch after a quiet spell
    is written straight away, so a lone export is in the store as soon as it can be; a stop
    writes what is held without waiting.

    With a ``spool``, what waits here is already on disk (the receiver acknowledged it only
    then): a write consumes its records from the spool, and on start the writer first drains
    what a previous process left there (``decode`` turns a spooled payload back into rows).
    Drops (store errors, undecodable or corrupt spooled records, drop reports from clients) are
    counted and written to ``dropped_spans`` with the next write that gets through.
    """

    def __init__(
        self,
        db_path: str | Path,
        counters: Counters,
        *,
        queue_size: int = 64,
        max_batch_spans: int = 20_000,
        min_write_interval_s: float = 1.0,
        lock_timeout_s: float = 30.0,
        max_attempts: int = 3,
        spool: Spool | None = None,
        decode: Callable[[bytes], tuple[Rows, int]] | None = None,
    ) -> None:
        super().__init__("aperture-span-writer", queue_size)
        self.db_path = Path(db_path)
        self.counters = counters
        self.max_batch_spans = max_batch_spans
        self.min_write_interval_s = min_write_interval_s
        self.lock_timeout_s = lock_timeout_s
        self.max_attempts = max(1, max_attempts)
        self.spool = spool
        self.decode = decode
        self.replay_until: Position | None = None
        self._unrecorded: list[dict[str, object]] = []

    def submit(self, rows: Rows, n_spans: int, position: Position | None = None) -> bool:
        """Queue a request's rows; False when the queue is full (answer 503)."""
        self.start()
        try:
            self.queue.put_nowait(Item(rows, n_spans, position))
        except queue.Full:
            return False
        return True

    def report_dropped(self, reason: str, count: int) -> None:
        """Count a loss and have it written to ``dropped_spans`` (blocks while the queue is full)."""
        self.start()
        self.queue.put(Item(drops=[(reason, count)]))

    def _loop(self) -> None:
        self._replay_spool()
        last_write = -float("inf")
        while True:
            item = self.queue.get()
            if item is _STOP:
                self.queue.task_done()
                return
            items = [item]
            n_spans = item.n_spans
            stop = False
            not_before = last_write + self.min_write_interval_s
            while n_spans < self.max_batch_spans:
                wait = not_before - time.monotonic()
                try:
                    more = self.queue.get(timeout=wait) if wait > 0 else self.queue.get_nowait()
                except queue.Empty:
                    if wait > 0:
                        continue  # the interval is over: one last look without waiting
                    break
                if more is _STOP:
                    stop = True
                    break
                items.append(more)
                n_spans += more.n_spans
            last_write = time.monotonic()
            self._write(items, n_spans)
            for _ in items:
                self.queue.task_done()
            if stop:
                self.queue.task_done()
                return

    def _replay_spool(self) -> None:
        """Write what the spool held when the receiver started (a previous process's backlog)."""
        if self.spool is None:
            return
        if self.spool.corrupt_records:
            self._drop("receiver_spool_corrupt", self.spool.corrupt_spans)
        if self.decode is None or self.replay_until is None:
            return
        items: list[Item] = []
        n_spans = 0
        for position, count, payload in self.spool.records(self.replay_until):
            try:
                rows, count = self.decode(payload)
            except Exception as exc:
                log.error("spooled batch of %d spans cannot be decoded: %s", count, exc)
                items.append(Item(n_spans=0, position=position, drops=[("receiver_spool_undecodable", count)]))
                continue
            items.append(Item(rows, count, position))
            n_spans += count
            if n_spans >= self.max_batch_spans:
                self._write(items, n_spans)
                items, n_spans = [], 0
        if items:
            self._write(items, n_spans)
        if self.replay_until is not None:
            log.info("receiver spool replayed into the store")

    def _drop(self, reason: str, count: int) -> None:
        self.counters.dropped(reason, count)
        self._unrecorded.append({"ts": utc_now(), "reason": reason, "count": count})

    def _write(self, items: list[Item], n_spans: int) -> None:
        for item in items:
            for reason, count in item.drops:
                self._drop(reason, count)
        merged = merge_batches(item.rows for item in items if item.rows is not None)
        positions = [item.position for item in items if item.position is not None]
        last: Exception | None = None
        for attempt in range(self.max_attempts):
            try:
                with open_store(self.db_path, timeout_s=self.lock_timeout_s) as conn:
                    write_tables(conn, {**merged, "dropped_spans": list(self._unrecorded)} if self._unrecorded else merged)
                self._unrecorded.clear()
                self.counters.add("spans_written", n_spans)
                self.counters.add("store_writes")
                break
            except Exception as exc:
                last = exc
                if attempt + 1 < self.max_attempts:
                    time.sleep(0.1 * 2**attempt)
        else:
            log.error("dropping %d received spans: %s", n_spans, last)
            self._drop(f"receiver_store_error:{type(last).__name__}", n_spans)
            self._record_drops_alone()
        if self.spool is not None and positions:
            self.spool.consume(max(positions))

    def _record_drops_alone(self) -> None:
        try:
            with open_store(self.db_path, timeout_s=1.0) as conn:
                write_tables(conn, {"dropped_spans": list(self._unrecorded)})
            self._unrecorded.clear()
        except Exception:
            log.warning("could not record dropped spans in the store yet; kept for the next write")


class Forwarder(_Worker):
    """Re-posts received OTLP bodies to another OTLP/HTTP endpoint (fan-out)."""

    def __init__(
        self,
        url: str,
        counters: Counters,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        queue_size: int = 256,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__("aperture-otlp-forwarder", queue_size)
        self.url = url
        self.counters = counters
        self.headers = dict(headers or {})
        self.timeout_s = timeout_s
        self.transport = transport

    def submit(self, body: bytes, content_type: str) -> None:
        self.start()
        try:
            self.queue.put_nowait((body, content_type))
        except queue.Full:
            self.counters.add("forward_failures")
            self.counters.add("forward_queue_full")

    def _loop(self) -> None:
        with httpx.Client(timeout=self.timeout_s, transport=self.transport) as client:
            while True:
                item = self.queue.get()
                try:
                    if item is _STOP:
                        return
                    self._post(client, *item)
                finally:
                    self.queue.task_done()

    def _post(self, client: httpx.Client, body: bytes, content_type: str) -> None:
        try:
            response = client.post(
                self.url, content=body, headers={**self.headers, "Content-Type": content_type}
            )
        except httpx.HTTPError as exc:
            log.warning("forwarding to %s failed: %s", self.url, exc)
            self.counters.add("forward_failures")
            return
        if response.is_success:
            self.counters.add("forwarded_requests")
        else:
            log.warning("forwarding to %s answered %d", self.url, response.status_code)
            self.counters.add("forward_failures")
