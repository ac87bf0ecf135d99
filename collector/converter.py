"""Spans become rows in a child process: the embedded exporter's GIL-heavy step, moved out.

Why: the embedded exporter converted spans to rows on a thread of the gateway, holding the GIL
for ≈ 11 ms per 600 spans; a request that arrived meanwhile waited for it, and that wait was the
gateway's latency tail (docs/benchmarks.md "Gateway overhead"). Now the exporter's thread only
reads each span into plain values (``collector.otlp.compact_spans``, ≈ 1 ms per 600 spans with
the pickling) and hands them here; the formatting and the Arrow columns are built in this child,
and the rows come back to be written by the exporter as before. The child never opens the store:
the file, its lock, its hold and every drop count stay with the gateway process.

The child runs ``python -m collector.converter``, started with the exporter and again on the
next batch whenever it is gone. Parent and
child speak over the child's stdin and stdout, one request and one reply at a time, each a
4-byte length and a pickle: a ``CompactBatch`` in, ``("rows", batch)`` or ``("error", text)``
out. Pickles are read only from the parent's own pipe.

The child ignores SIGINT (a Ctrl-C reaches the whole process group while the gateway still has
spans to write) and exits when its stdin closes, which also happens when the gateway dies.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, cast

from collector.columns import Batch, spans_to_batch
from collector.sdkspans import CompactBatch, records_from_compact
from collector.store import close_store, connect, rows_to_arrow, table_columns

_LENGTH = struct.Struct("!I")
_ROOT = str(Path(__file__).resolve().parents[1])  # where ``collector`` is imported from here


class ConverterGone(Exception):
    """The converter process died, did not answer in time, or could not be started."""


class ConverterResting(ConverterGone):
    """No converter runs: the last one failed less than ``restart_after_s`` ago."""


def _send(stream: IO[bytes], message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    fd = stream.fileno()
    for part in (_LENGTH.pack(len(data)), data):
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view):]


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError(f"no reply within the deadline ({size - left} of {size} bytes)")
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the pipe")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive(fd: int, deadline: float | None = None) -> Any:
    (size,) = _LENGTH.unpack(_read_exactly(fd, _LENGTH.size, deadline))
    return pickle.loads(_read_exactly(fd, size, deadline))


class ConverterProcess:
    """The parent's handle on one converter child.

    ``convert`` sends one batch and waits for its rows; a child that is gone is started again
    on the next batch (``restart_after_s`` after a failed one). Thread-safe (one batch at a time).
    """

    def __init__(self, reply_timeout_s: float = 10.0, restart_after_s: float = 30.0) -> None:
        self.reply_timeout_s = reply_timeout_s
        #: After a failed batch no new child is started for this long (batches are converted in
        #: the parent meanwhile): a child that cannot work must not cost a start-up per batch.
        self.restart_after_s = restart_after_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._failed_at = float("-inf")
        self.starts = 0

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def convert(self, batch: CompactBatch) -> Batch:
        """The rows of ``batch``, built in the child; ``ConverterGone`` when it cannot answer,
        ``ValueError`` when the batch itself cannot be converted."""
        with self._lock:
            if not self.running:
                if time.monotonic() - self._failed_at < self.restart_after_s:
                    raise ConverterResting("the span converter process failed recently; not restarted yet")
                self._start()
            proc = self._proc
            assert proc is not None and proc.stdin is not None and proc.stdout is not None
            try:
                _send(proc.stdin, batch)
                kind, payload = _receive(proc.stdout.fileno(), time.monotonic() + self.reply_timeout_s)
            except Exception as exc:  # died, hung, or answered garbage: the parent converts instead
                self._stop(kill=True)
                self._failed_at = time.monotonic()
                raise ConverterGone(f"the span converter process failed: {type(exc).__name__}: {exc}") from exc
        if kind != "rows":
            raise ValueError(f"the span converter could not convert the batch: {payload}")
        return cast(Batch, payload)

    def start(self) -> None:
        """Start the child now, so that its start-up (≈ 0.5 s of CPU: Python, pyarrow, DuckDB)
        is paid while the gateway starts rather than beside its first requests."""
        with self._lock:
            if not self.running:
                self._start()

    def _start(self) -> None:
        self._stop(kill=True)
        try:
            # -P: not the working directory's modules, this installation's (``_ROOT`` first).
            path = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p)
            self._proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "collector.converter"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0, close_fds=True,
                env={**os.environ, "PYTHONPATH": path},
            )
        except OSError as exc:
            self._failed_at = time.monotonic()
            raise ConverterGone(f"could not start the span converter process: {exc}") from exc
        self.starts += 1

    def close(self, timeout_s: float = 5.0) -> None:
        """Let the child exit; killed after ``timeout_s``."""
        with self._lock:
            self._stop(kill=False, timeout_s=timeout_s)

    def _stop(self, *, kill: bool, timeout_s: float = 15.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if kill:
            proc.kill()
        else:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()  # the child's cue to close the store and exit
            except OSError:
                pass
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None and not stream.closed:
                stream.close()


def log_table_columns() -> dict[str, dict[str, str]]:
    """The typed columns of the span tables that ``spans_to_batch`` fills with dict rows, read
    from a store migrated in memory: the same migrations give the file the same columns."""
    conn = connect(":memory:")
    try:
        return {table: table_columns(conn, table) for table in ("spans", "request_spans")}
    finally:
        close_store(conn)


def convert(batch: CompactBatch, columns: dict[str, dict[str, str]]) -> Batch:
    """Compact spans → the rows ``write_tables`` stores, every table already in Arrow (dict rows
    would be typed by the gateway's process, holding its GIL)."""
    rows = spans_to_batch(records_from_compact(batch))
    for table, table_cols in columns.items():
        part = rows.get(table)
        if isinstance(part, list):
            rows[table] = rows_to_arrow(part, table_cols, table)
    return rows


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """The child's loop: convert each batch until ``requests`` closes."""
    columns = log_table_columns()
    fd = requests.fileno()
    while True:
        try:
            batch = _receive(fd)
        except EOFError:
            return
        try:
            reply: tuple[str, Any] = ("rows", convert(batch, columns))
        except Exception as exc:  # the parent converts it itself, to log and count the failure
            reply = ("error", f"{type(exc).__name__}: {exc}")
        _send(replies, reply)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print cannot break a reply
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
