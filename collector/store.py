"""Short-lived connections to the shared DuckDB store, and its read/write helpers.

DuckDB lets one process at a time hold a file read-write, so the gateway, the
receiver, ``aperture eval`` and ``aperture guard`` take turns: each opens the
file, does its work and closes it. ``open_store`` waits (with backoff) while
another process holds the lock instead of failing at once::

    with open_store("aperture.duckdb") as conn:
        insert_rows(conn, "eval_scores", rows)
    with open_store("aperture.duckdb", read_only=True) as conn:
        df = fetch_df(conn, "SELECT model, sum(cost_usd) FROM image_spans GROUP BY 1")
"""

from __future__ import annotations

import itertools
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from collector.append import WRITE_LOCK, add_span_meta, append
from collector.record import to_json
from collector.schema import LOG_TABLES, latest_version, migrate
from collector.semconv import utc_now

_ARROW_TYPES: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "JSON": pa.string(),
    "BIGINT": pa.int64(),
    "INTEGER": pa.int32(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMP": pa.timestamp("us"),
}
_ON_CONFLICT = {"ignore": "INSERT OR IGNORE INTO", "replace": "INSERT OR REPLACE INTO"}
_batch_names = itertools.count()
#: Batches at least this big are written without merging row groups at checkpoint,
#: and checkpointed at commit instead of going through the write-ahead log first.
BULK_ROWS = 10_000
_BULK_SETTINGS = ("SET max_vacuum_tasks = 0", "SET checkpoint_threshold = '0B'")
_SMALL_SETTINGS = ("RESET max_vacuum_tasks", "RESET checkpoint_threshold")


class StoreError(Exception):
    """Base of the store's errors."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """A read-only open of a store file that does not exist."""


class StoreLockedError(StoreError, TimeoutError):
    """Another process kept the file locked for longer than the timeout."""


def _is_lock_error(exc: Exception) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


def _is_config_clash(exc: Exception) -> bool:
    # Same process, same file, other read_only setting: DuckDB refuses the second config.
    return isinstance(exc, duckdb.ConnectionException) and "configuration" in str(exc)


#: DuckDB tears a file's database down when its last connection in the process closes and
#: builds it anew on the next open. An open or close racing another thread's Arrow scan of the
#: same file can find the Python table functions missing ("python_arrow_scan does not exist"),
#: so opens and closes are serialized within a process: they are short next to the work
#: between them, and a lock held by another process is waited for outside this lock.
_LIFECYCLE = threading.Lock()


def _new_lifecycle_lock() -> None:
    # A process forked while another thread held the lock (the evals runner forks its workers)
    # would inherit it held, and its first open would wait forever.
    global _LIFECYCLE
    _LIFECYCLE = threading.Lock()


os.register_at_fork(after_in_child=_new_lifecycle_lock)


def _duckdb_connect(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    with _LIFECYCLE:
        return duckdb.connect(path, read_only=read_only)


def close_store(conn: duckdb.DuckDBPyConnection) -> None:
    """Close a connection from :func:`connect` (serialized with opens, see ``_LIFECYCLE``)."""
    with _LIFECYCLE:
        conn.close()


def connect(
    path: str | Path, *, read_only: bool = False, timeout_s: float = 30.0
) -> duckdb.DuckDBPyConnection:
    """Open the store, waiting up to ``timeout_s`` for another process's lock.

    Read-write opens create the file (and its folder) and run migrations.
    A read-only open inside a process that already has the file open
    read-write shares that connection's database instead of failing.
    """
    memory = str(path) == ":memory:"
    if not memory:
        path = Path(path)
        if read_only and not path.exists():
            raise StoreNotFoundError(f"store {str(path)!r} does not exist (nothing recorded yet?)")
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        try:
            conn = _duckdb_connect(str(path), read_only and not memory)
            break
        except duckdb.Error as exc:
            if read_only and _is_config_clash(exc):
                return _duckdb_connect(str(path), False)
            if not (_is_lock_error(exc) or _is_config_clash(exc)):
                raise StoreError(f"cannot open store {str(path)!r}: {exc}") from exc
            if time.monotonic() + delay > deadline:
                raise StoreLockedError(
                    f"store {str(path)!r} still locked by another process after {timeout_s:.1f}s"
                ) from exc
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)
    if not read_only:
        try:
            _migrate_once(conn)
        except BaseException:
            close_store(conn)
            raise
    return conn


_migrate_lock = threading.Lock()


def _migrate_once(conn: duckdb.DuckDBPyConnection) -> None:
    # Threads of one process share the file without DuckDB's file lock between
    # them; two first-time migrations at once would both insert version 1.
    with _migrate_lock:
        if _stored_version(conn) < latest_version():
            migrate(conn)


def _stored_version(conn: duckdb.DuckDBPyConnection) -> int:
    """The file's schema version in one query (0 when it has none yet).

    Every read-write open asks this; ``migrate`` only runs when it is behind:
    its catalog checks cost ≈3 ms, a sixth of a whole open (see docs/benchmarks.md).
    """
    try:
        row = conn.execute("SELECT max(version) FROM schema_version").fetchall()
    except duckdb.CatalogException:
        return 0
    return int(row[0][0]) if row and row[0][0] is not None else 0


@contextmanager
def open_store(
    path: str | Path, read_only: bool = False, timeout_s: float = 30.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Context manager around :func:`connect`; the connection is closed on exit."""
    conn = connect(path, read_only=read_only, timeout_s=timeout_s)
    try:
        yield conn
    finally:
        close_store(conn)


def fetch_df(
    conn: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | dict[str, Any] | None = None
) -> pl.DataFrame:
    """Run a query and return its result as a polars DataFrame (JSON columns as strings)."""
    relation = conn.sql(sql, params=params) if params is not None else conn.sql(sql)
    if relation is None:
        raise ValueError("fetch_df needs a query that returns rows")
    return relation.pl()


def table_columns(conn: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    """Column name → DuckDB type name, in table order (tables and views alike)."""
    # DESCRIBE binds the query now: a view shows columns added to its table since.
    try:
        rows = conn.execute(f'DESCRIBE SELECT * FROM "{table}"').fetchall()
    except duckdb.CatalogException as exc:
        raise StoreError(f"no table {table!r} in the store") from exc
    return {row[0]: row[1] for row in rows}


def primary_key(conn: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    row = conn.execute(
        "SELECT constraint_column_names FROM duckdb_constraints() "
        "WHERE table_name = ? AND schema_name = current_schema() "
        "AND constraint_type = 'PRIMARY KEY'",
        [table],
    ).fetchall()
    return list(row[0][0]) if row else []


def _dedupe(rows: list[dict[str, Any]], key: list[str], keep_last: bool) -> list[dict[str, Any]]:
    # Which of two rows with one key an upsert keeps is up to DuckDB; decide it here.
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        k = tuple(row.get(c) for c in key)
        if keep_last or k not in seen:
            seen[k] = row
    return list(seen.values()) if len(seen) != len(rows) else rows


def _columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows → column lists. Fast path when every row has the first row's keys."""
    first = rows[0]
    width = len(first)
    if all(len(row) == width for row in rows):
        try:
            return {name: list(map(itemgetter(name), rows)) for name in first}
        except KeyError:
            pass  # same sizes, different keys: take the general path
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return {name: [row.get(name) for row in rows] for name in names}


def rows_to_arrow(rows: list[dict[str, Any]], columns: dict[str, str], table: str) -> pa.Table:
    """Dict rows → one Arrow table typed by ``columns`` (``table_columns``); ``ValueError`` names
    an unknown column or a value that does not fit its type."""
    data = _columns(rows)
    unknown = [c for c in data if c not in columns]
    if unknown:
        raise ValueError(f"unknown column(s) for {table}: {', '.join(sorted(unknown))}")
    arrays = []
    for name, values in data.items():
        dtype = columns[name]
        if dtype == "JSON":
            values = [v if v is None or type(v) is str else to_json(v) for v in values]
        try:
            # TIMESTAMP columns take datetimes or integer µs since the epoch (UTC)
            arrays.append(pa.array(values, type=_ARROW_TYPES.get(dtype)))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise ValueError(f"{table}.{name} ({dtype}): {exc}") from exc
    return pa.Table.from_arrays(arrays, names=list(data))


def insert_rows(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    rows: list[dict[str, Any]],
    *,
    on_conflict: str = "ignore",
) -> int:
    """Bulk-insert dict rows through one Arrow batch; return how many rows were sent.

    Keys missing from a row become NULL; unknown keys raise ``ValueError``.
    JSON columns accept dicts/lists (serialized here) or ready JSON text.
    TIMESTAMP columns take naive-UTC datetimes or integer µs since the epoch.
    ``on_conflict``: ``"ignore"`` keeps the stored row (idempotent re-export),
    ``"replace"`` overwrites it (the batch's last row per key wins); tables
    without a primary key simply append. Returns the number of rows sent
    (after collapsing duplicate keys for ``"replace"``).
    """
    if not rows:
        return 0
    if on_conflict not in _ON_CONFLICT:
        raise ValueError(f"on_conflict must be one of {sorted(_ON_CONFLICT)}")
    columns = table_columns(conn, table)
    if table in LOG_TABLES:  # append-only span tables: duplicates refused in collector.append
        if on_conflict == "replace":
            rows = _dedupe(rows, ["trace_id", "span_id"], keep_last=True)
        append(conn, table, rows_to_arrow(rows, columns, table), replace=on_conflict == "replace")
        return len(rows)
    key = primary_key(conn, table)
    verb = "INSERT INTO"
    if key:
        if on_conflict == "replace":  # the batch's last row for a key wins, as in a dict
            rows = _dedupe(rows, key, keep_last=True)
        verb = _ON_CONFLICT[on_conflict]
    batch = rows_to_arrow(rows, columns, table)
    view = f"_aperture_batch_{next(_batch_names)}"
    conn.register(view, batch)
    try:
        conn.execute(f'{verb} "{table}" BY NAME SELECT * FROM "{view}"').fetchall()
    finally:
        conn.unregister(view)
    return len(rows)


_REFERENCE_FIELDS = {"id", "kind", "task", "text", "lines", "fields", "qa", "sha256"}


def _json_or_none(value: Any) -> str | None:
    # Encode here so that a plain string field is stored as a JSON string, not raw text.
    return None if value is None else to_json(value)


def reference_row(record: dict[str, Any], loaded_at: Any) -> dict[str, Any]:
    """One workload-generator JSONL record → one ``references`` row."""
    if "id" not in record or record["id"] in (None, ""):
        raise ValueError("reference record without an 'id'")
    meta = {k: v for k, v in record.items() if k not in _REFERENCE_FIELDS}
    return {
        "reference_id": str(record["id"]),
        "kind": record.get("kind"),
        "task": record.get("task"),
        "text": record.get("text"),
        "lines": _json_or_none(record.get("lines")),
        "fields": _json_or_none(record.get("fields")),
        "qa": _json_or_none(record.get("qa")),
        "image_sha256": record.get("sha256"),
        "meta": to_json(meta) if meta else None,
        "loaded_at": loaded_at,
    }


def load_references(conn: duckdb.DuckDBPyConnection, records: list[dict[str, Any]]) -> int:
    """Upsert reference records (a reloaded id replaces the old row); return the count."""
    now = utc_now()
    rows = [reference_row(r, now) for r in records]
    return insert_rows(conn, "references", rows, on_conflict="replace")


def write_tables(
    conn: duckdb.DuckDBPyConnection, rows_by_table: dict[str, list[dict[str, Any]] | pa.Table]
) -> int:
    """Insert rows for several tables in one transaction (all or nothing); return the row count.

    Values may also be Arrow tables (as ``collector.columns.spans_to_batch``
    builds them for ``image_spans``): they go to the table's append path as is.
    """
    total = 0
    rows_in = sum(len(r) if isinstance(r, list) else r.num_rows for r in rows_by_table.values())
    # Each write to a checkpointed table starts a new row group, and the checkpoint at
    # close merges small ones ("vacuum"), rewriting up to ~120k rows each time. A big
    # batch makes a row group worth keeping, so it skips that (ingest 24k → 42k spans/s,
    # see docs/benchmarks.md); small batches (the gateway's exporter) still merge.
    # A big batch is also checkpointed by its COMMIT (threshold 0) rather than written
    # to the WAL at commit and again to the file by the checkpoint at close: once, not
    # twice (≈0.6 µs less per span). The connection closes right after either way.
    for setting in _BULK_SETTINGS if rows_in >= BULK_ROWS else _SMALL_SETTINGS:
        conn.execute(setting)
    with WRITE_LOCK:
        conn.execute("BEGIN TRANSACTION")
        try:
            for table, rows in rows_by_table.items():
                if table == "span_meta":
                    add_span_meta(conn, rows)
                elif isinstance(rows, pa.Table):
                    append(conn, table, rows)
                    total += rows.num_rows
                else:
                    total += insert_rows(conn, table, rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return total


def record_dropped(conn: duckdb.DuckDBPyConnection, reason: str, count: int) -> None:
    """Note spans that could not be stored, so that loss shows up in the store itself."""
    insert_rows(conn, "dropped_spans", [{"ts": utc_now(), "reason": reason, "count": count}])
