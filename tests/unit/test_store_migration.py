"""A store written by schema v1 (primary-keyed span tables) migrates to the append-only v2."""

from __future__ import annotations

from pathlib import Path

import duckdb

from collector.columns import spans_to_batch
from collector.rows import SpanRecord, span_to_rows
from collector.schema import MIGRATIONS, current_version, latest_version, migrate
from collector.spend import spend_report
from collector.store import fetch_df, open_store, rows_to_arrow, write_tables
from tests.unit.test_store_append import T0, assert_reads_back, image


def write_v1(conn: duckdb.DuckDBPyConnection, spans: list[SpanRecord]) -> None:
    """Rows as the v1 writer stored them: every span in `spans`, image rows again in image_spans."""
    for table in ("spans", "image_spans", "request_spans"):
        rows = [row for s in spans for row in span_to_rows(s).get(table, [])]
        if not rows:
            continue
        columns = {r[0]: r[1] for r in conn.execute(f"DESCRIBE {table}").fetchall()}
        rows = [{k: v for k, v in row.items() if k in columns} for row in rows]  # later columns: none in v1
        conn.register("v1", rows_to_arrow(rows, columns, table))
        conn.execute(f"INSERT INTO {table} BY NAME SELECT * FROM v1")
        conn.unregister("v1")


def v1_spans() -> list[SpanRecord]:
    spans = [image(i) for i in range(4)]
    spans[1].attributes["image.width"] = "77"
    spans.append(
        SpanRecord(
            "c" * 32,
            "d" * 16,
            "chat gpt-4o",
            T0,
            T0 + 5_000_000,
            attributes={"gen_ai.operation.name": "chat", "aperture.team": "t"},
            resource={"service.name": "gw"},
        )
    )
    return spans


def test_a_v1_file_migrates_and_reads_the_same(tmp_path: Path) -> None:
    path = tmp_path / "v1.duckdb"
    spans = v1_spans()
    with duckdb.connect(str(path)) as conn:
        assert migrate(conn, MIGRATIONS[:1]) == 1
        write_v1(conn, spans)
        # a row inserted straight into image_spans (no `spans` row) survives too
        conn.execute("INSERT INTO image_spans (trace_id, span_id, cost_usd) VALUES ('z', 'z', 2.0)")
    with open_store(path, read_only=True) as conn:  # a v1 file reads before any writer migrates
        assert current_version(conn) == 1
        assert spend_report(conn).images == 5
    with open_store(path) as conn:  # the first read-write open migrates
        assert current_version(conn) == latest_version()
        assert conn.execute("SELECT count(*) FROM image_spans").fetchall() == [(5,)]
        assert conn.execute("SELECT count(*) FROM spans").fetchall() == [(5,)]
        assert conn.execute("SELECT count(*) FROM request_spans").fetchall() == [(1,)]
        conn.execute("DELETE FROM image_span_log WHERE trace_id = 'z'")
        assert_reads_back(conn, spans)
        # re-exporting the migrated spans adds nothing; new spans are appended
        write_tables(conn, spans_to_batch([*spans, image(9)]))
        assert conn.execute("SELECT count(*) FROM image_spans").fetchall() == [(5,)]
        assert conn.execute("SELECT count(*) FROM spans").fetchall() == [(6,)]
        assert (
            fetch_df(
                conn, "SELECT width FROM image_spans WHERE span_id = ?", [spans[1].span_id]
            ).item()
            == 77
        )
        assert spend_report(conn, by="team").images == 5
