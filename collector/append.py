"""Idempotent appends to the span tables, without a primary-key index.

``spans``, ``image_spans`` and ``request_spans`` are views over append-only
tables (``collector.schema.LOG_TABLES``). A primary key on (trace_id, span_id)
made DuckDB load and rewrite its index on every short-lived connection, so an
insert cost more the bigger the file (≈17 µs per row at 3M rows, against ≈5
without). Duplicates are refused here instead, before the append:

- inside the batch, the first row per (trace_id, span_id) is kept (in Arrow);
- against the store, an anti-join on (trace_id, span_id) restricted to the
  batch's time range (``start_ts`` / ``ts`` between its min and max), which
  DuckDB answers from its per-segment min/max without reading older data.
  A re-exported span carries the same start time, so it is always caught;
  rows without a time make the check scan the whole table (slow but exact).

What is not caught: two *different* spans claiming the same ids with
different start times (a broken client) are both kept, where the old index
kept the first.

Writers in one process are serialized by a lock (DuckDB lets several
connections of one process write at once, and two concurrent anti-joins
would both see "absent"); across processes DuckDB's file lock does it.
"""

from __future__ import annotations

import itertools
import threading

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from collector.schema import LOG_TABLES

#: Held around every append to a span table (and the caller's transaction, where there is one).
WRITE_LOCK = threading.RLock()
_names = itertools.count()
_KEY = ("trace_id", "span_id")


def first_per_key(batch: pa.Table) -> pa.Table:
    """The batch without repeated (trace_id, span_id): the first row of each key stays."""
    keys = batch.select(list(_KEY))
    # one thread: the check is ≈1 ms per 20k rows, less than handing it to a second one
    if keys.group_by(list(_KEY), use_threads=False).aggregate([]).num_rows == batch.num_rows:
        return batch
    indexed = keys.append_column("_i", pa.array(range(batch.num_rows), pa.int64()))
    first = indexed.group_by(list(_KEY), use_threads=False).aggregate([("_i", "min")])
    return batch.take(first["_i_min"].sort())


def _time_window(batch: pa.Table, column: str) -> tuple[object, object] | None:
    if column not in batch.column_names:
        return None
    values = batch[column]
    if values.null_count:
        return None
    bounds = pc.min_max(values)
    return bounds["min"].as_py(), bounds["max"].as_py()


def append(
    conn: duckdb.DuckDBPyConnection, view: str, batch: pa.Table, *, replace: bool = False
) -> int:
    """Append ``batch`` to the table behind ``view``; return the rows actually added.

    ``replace``: a key already stored is overwritten by the batch's last row
    for it, instead of the stored row winning.
    """
    table, time_column = LOG_TABLES[view]
    if not batch.num_rows:
        return 0
    batch = _last_per_key(batch) if replace else first_per_key(batch)
    name = f"_aperture_append_{next(_names)}"
    window = _time_window(batch, time_column)
    within, params = "", []
    if window is not None:
        within, params = f' AND o."{time_column}" BETWEEN ? AND ?', [*window]
    with WRITE_LOCK:
        conn.register(name, batch)
        try:
            if replace:
                conn.execute(
                    f'DELETE FROM "{table}" o WHERE EXISTS (SELECT 1 FROM "{name}" b '
                    "WHERE o.trace_id = b.trace_id AND o.span_id = b.span_id)"
                )
                sql, params = f'INSERT INTO "{table}" BY NAME SELECT * FROM "{name}"', []
            else:
                sql = (
                    f'INSERT INTO "{table}" BY NAME SELECT * FROM "{name}" b WHERE NOT EXISTS ('
                    f'SELECT 1 FROM "{table}" o WHERE o.trace_id = b.trace_id '
                    f"AND o.span_id = b.span_id{within})"
                )
            added = conn.execute(sql, params).fetchall()
        finally:
            conn.unregister(name)
    return int(added[0][0]) if added else 0


def add_span_meta(conn: duckdb.DuckDBPyConnection, metas: pa.Table) -> None:
    """Store the ``span_meta`` rows whose id is not stored yet (ids are content hashes)."""
    if not metas.num_rows:
        return
    name = f"_aperture_meta_{next(_names)}"
    with WRITE_LOCK:
        conn.register(name, metas)
        try:
            conn.execute(
                f'INSERT INTO span_meta BY NAME SELECT DISTINCT ON (meta_id) * FROM "{name}" '
                "WHERE meta_id NOT IN (SELECT meta_id FROM span_meta)"
            )
        finally:
            conn.unregister(name)


def _last_per_key(batch: pa.Table) -> pa.Table:
    keys = batch.select(list(_KEY))
    indexed = keys.append_column("_i", pa.array(range(batch.num_rows), pa.int64()))
    last = indexed.group_by(list(_KEY), use_threads=False).aggregate([("_i", "max")])
    return batch.take(last["_i_max"].sort())
