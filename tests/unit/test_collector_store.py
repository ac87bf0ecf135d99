"""Schema migrations and the store's bulk-insert helpers (in-memory and tmp files)."""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from collector.schema import (
    MIGRATIONS,
    TABLES,
    Migration,
    add_column,
    current_version,
    latest_version,
    migrate,
)
from collector.store import (
    StoreNotFoundError,
    fetch_df,
    insert_rows,
    load_references,
    open_store,
    primary_key,
    table_columns,
)


@pytest.fixture
def conn() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    migrate(c)
    return c


def test_migrate_creates_every_table_once(conn: duckdb.DuckDBPyConnection) -> None:
    tables = {r[0] for r in conn.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    views = {r[0] for r in conn.execute("SELECT view_name FROM duckdb_views()").fetchall()}
    assert set(TABLES) | {"schema_version"} <= tables | views
    assert {"spans", "image_spans", "request_spans"} <= views  # over append-only tables
    assert migrate(conn) == migrate(conn) == latest_version() == max(m.version for m in MIGRATIONS)
    assert conn.execute("SELECT count(*) FROM schema_version").fetchall() == [(len(MIGRATIONS),)]


def test_a_later_migration_adds_a_column_and_old_rows_still_insert(
    conn: duckdb.DuckDBPyConnection,
) -> None:
    insert_rows(conn, "image_spans", [{"trace_id": "t", "span_id": "a", "width": 1}])
    nxt = latest_version() + 1
    v2 = [*MIGRATIONS, Migration(nxt, "blur", (add_column("image_spans", "blur_score", "DOUBLE"),))]
    assert migrate(conn, v2) == nxt
    assert migrate(conn, v2) == nxt and current_version(conn) == nxt
    assert table_columns(conn, "image_spans")["blur_score"] == "DOUBLE"
    insert_rows(conn, "image_spans", [{"trace_id": "t", "span_id": "b", "width": 2}])
    insert_rows(conn, "image_spans", [{"trace_id": "t", "span_id": "c", "blur_score": 0.5}])
    rows = fetch_df(conn, "SELECT span_id, blur_score FROM image_spans ORDER BY span_id").rows()
    assert rows == [("a", None), ("b", None), ("c", 0.5)]
    # older code leaves a newer file alone
    assert migrate(conn) == nxt


def test_failed_migration_rolls_back(conn: duckdb.DuckDBPyConnection) -> None:
    nxt = latest_version() + 1
    broken = [*MIGRATIONS, Migration(nxt, "broken", ("CREATE TABLE t2 (a INT)", "NOT SQL"))]
    with pytest.raises(duckdb.Error):
        migrate(conn, broken)
    assert current_version(conn) == latest_version()
    assert not conn.execute("SELECT * FROM duckdb_tables() WHERE table_name = 't2'").fetchall()


def test_insert_rows_is_idempotent_and_dedupes_a_batch(conn: duckdb.DuckDBPyConnection) -> None:
    rows = [
        {"trace_id": "t", "span_id": str(i), "ts": datetime(2025, 1, 1), "cost_usd": 0.1}
        for i in range(5)
    ]
    assert insert_rows(conn, "image_spans", rows + rows[:2]) == 7  # sent; stored once each
    insert_rows(conn, "image_spans", rows)
    assert conn.execute("SELECT count(*) FROM image_spans").fetchall() == [(5,)]
    changed = [{**rows[0], "cost_usd": 9.0}]
    insert_rows(conn, "image_spans", changed)  # ignore: the stored row wins
    assert conn.execute("SELECT cost_usd FROM image_spans WHERE span_id='0'").fetchall() == [(0.1,)]
    insert_rows(conn, "image_spans", changed, on_conflict="replace")
    assert conn.execute("SELECT cost_usd FROM image_spans WHERE span_id='0'").fetchall() == [(9.0,)]
    twice = [{**rows[1], "cost_usd": 1.0}, {**rows[1], "cost_usd": 2.0}]
    assert insert_rows(conn, "image_spans", twice, on_conflict="replace") == 1
    assert conn.execute("SELECT cost_usd FROM image_spans WHERE span_id='1'").fetchall() == [(2.0,)]


def test_insert_rows_encodes_json_and_appends_without_a_key(
    conn: duckdb.DuckDBPyConnection,
) -> None:
    assert primary_key(conn, "rollouts") == []
    row = {"rollout_id": "r1", "decision": "start", "statistics": {"p": 0.04, "n": [1, 2]}}
    insert_rows(conn, "rollouts", [row, row])
    stored = conn.execute("SELECT statistics FROM rollouts").fetchall()
    assert [json.loads(s[0]) for s in stored] == [{"p": 0.04, "n": [1, 2]}] * 2


def test_insert_rows_refuses_bad_input(conn: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(ValueError, match="unknown column"):
        insert_rows(conn, "image_spans", [{"trace_id": "t", "span_id": "s", "colour": "red"}])
    with pytest.raises(ValueError, match="width"):
        insert_rows(conn, "image_spans", [{"trace_id": "t", "span_id": "s", "width": "wide"}])
    with pytest.raises(ValueError, match="on_conflict"):
        insert_rows(conn, "image_spans", [{"trace_id": "t", "span_id": "s"}], on_conflict="merge")
    assert insert_rows(conn, "image_spans", []) == 0


def test_load_references_maps_fields_and_replaces(conn: duckdb.DuckDBPyConnection) -> None:
    record = {
        "id": "doc-1",
        "kind": "document",
        "task": "ocr",
        "text": "Total 42",
        "lines": ["Total 42"],
        "fields": {"total": "42"},
        "qa": [{"q": "total?", "a": "42"}],
        "sha256": "ab" * 32,
        "seed": 7,
        "font_px": 18,
    }
    assert load_references(conn, [record]) == 1
    load_references(conn, [{**record, "text": "Total 43"}])
    (row,) = fetch_df(conn, 'SELECT * FROM "references"').to_dicts()
    assert row["reference_id"] == "doc-1" and row["text"] == "Total 43"
    assert json.loads(row["lines"]) == ["Total 42"] and json.loads(row["fields"]) == {"total": "42"}
    assert json.loads(row["qa"]) == [{"q": "total?", "a": "42"}]
    assert row["image_sha256"] == "ab" * 32 and json.loads(row["meta"]) == {
        "seed": 7,
        "font_px": 18,
    }
    assert isinstance(row["loaded_at"], datetime)
    with pytest.raises(ValueError, match="id"):
        load_references(conn, [{"kind": "document"}])


def test_open_store_files(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError), open_store(tmp_path / "missing.duckdb", read_only=True):
        pass
    path = tmp_path / "nested" / "store.duckdb"
    with open_store(path) as c:
        insert_rows(c, "dropped_spans", [{"reason": "x", "count": 1}])
    with open_store(path, read_only=True) as c:
        assert c.execute("SELECT count(*) FROM dropped_spans").fetchall() == [(1,)]
        with pytest.raises(duckdb.Error):
            c.execute("DELETE FROM dropped_spans")
    # a read-only open while this process holds the file read-write shares it
    with open_store(path) as writer, open_store(path, read_only=True) as reader:
        insert_rows(writer, "dropped_spans", [{"reason": "y", "count": 2}])
        assert reader.execute("SELECT sum(count) FROM dropped_spans").fetchall() == [(3,)]


def test_threads_opening_a_fresh_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "fresh.duckdb"
    errors: list[BaseException] = []

    def open_and_write(i: int) -> None:
        try:
            with open_store(path) as c:
                insert_rows(c, "dropped_spans", [{"reason": f"t{i}", "count": i}])
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=open_and_write, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    with open_store(path, read_only=True) as c:
        assert c.execute(
            "SELECT count(*), (SELECT max(version) FROM schema_version) FROM dropped_spans"
        ).fetchall() == [(6, latest_version())]


def test_a_process_forked_while_another_thread_opens_the_store_can_open_it(tmp_path: Path) -> None:
    """The evals runner forks its workers from a process whose other threads open and close the
    store all the time; a child must not inherit the open/close lock held."""
    import multiprocessing

    import collector.store as store_module

    db = tmp_path / "fork.duckdb"
    with open_store(db):
        pass

    def child(queue: Any) -> None:
        with open_store(db, read_only=True) as conn:
            queue.put(conn.execute("SELECT 41 + 1").fetchone()[0])

    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    with store_module._LIFECYCLE:  # as if another thread were opening the store at fork time
        proc = ctx.Process(target=child, args=(queue,))
        proc.start()
    proc.join(20)
    alive = proc.is_alive()
    if alive:
        proc.kill()
    assert not alive and proc.exitcode == 0 and queue.get(timeout=5) == 42
