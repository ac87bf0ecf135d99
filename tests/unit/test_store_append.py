"""The bulk write path (spans_to_batch + write_tables) against what span_to_rows promises.

Readers see the store through the ``spans`` / ``image_spans`` / ``request_spans``
views; whatever the columnar path stores must read back as the per-span rows
of ``span_to_rows``, and writing a batch again must not add a row.
"""

from __future__ import annotations

import json
import math
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.columns import merge_batches, spans_to_batch
from collector.record import SpanRecord
from collector.rows import IMAGE_COLUMNS, span_to_rows
from collector.schema import IMAGE_ATTRIBUTE_COLUMNS, migrate
from collector.store import fetch_df, insert_rows, open_store, write_tables

T0 = 1_760_000_000_000_000_000
RESOURCE = {"service.name": "gw", "host.name": "a"}


def image(i: int, attrs: dict[str, Any] | None = None, **kw: Any) -> SpanRecord:
    base = {
        "image.index": i % 3,
        "image.sha256": f"{i:064x}",
        "image.width": 100 + i,
        "image.height": 50,
        "image.detail": "high",
        "image.tokens_billed": 85 + i,
        "image.cost_usd": 0.001 * (i + 1),
        "gen_ai.request.model": "gpt-4o",
        "aperture.team": "t",
    }
    fields: dict[str, Any] = {
        "trace_id": f"{i // 2:032x}",
        "span_id": f"{i + 1:016x}",
        "name": "image",
        "start_ns": T0 + i * 1_000_000,
        "end_ns": T0 + i * 1_000_000 + 2_500_000,
        "parent_span_id": f"{10**6 + i // 2:016x}",
        "attributes": base if attrs is None else attrs,
        "resource": RESOURCE,
    }
    fields.update(kw)
    return SpanRecord(**fields)


@pytest.fixture
def conn() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    migrate(c)
    return c


def _us(value: datetime | None) -> int | None:
    return None if value is None else round((value - datetime(1970, 1, 1)).total_seconds() * 1e6)


def _same(expected: Any, got: Any, column: str) -> bool:
    if column in ("attributes", "events", "resource") and expected is not None:
        return json.loads(expected) == json.loads(got)
    if column in ("start_ts", "end_ts", "ts") and isinstance(got, datetime):
        return expected == _us(got)
    if column == "duration_ms" and expected is not None:
        return got is not None and abs(expected - got) < 1e-3  # the view works in µs
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(got, float) and math.isnan(got)
    return bool(expected == got)


def assert_reads_back(conn: duckdb.DuckDBPyConnection, spans: list[SpanRecord]) -> None:
    for table in ("spans", "image_spans"):
        got = {r["span_id"]: r for r in fetch_df(conn, f"SELECT * FROM {table}").to_dicts()}
        expected = [row for s in spans for row in span_to_rows(s).get(table, [])]
        assert len(got) == len(expected)
        for row in expected:
            stored = got[row["span_id"]]
            diff = {k: (v, stored[k]) for k, v in row.items() if not _same(v, stored[k], k)}
            assert diff == {}, (table, row["span_id"])


def test_the_view_rebuilds_attributes_from_the_same_mapping_as_the_rows() -> None:
    assert {(k, c) for c, k, _ in IMAGE_COLUMNS} == set(IMAGE_ATTRIBUTE_COLUMNS)


def test_image_spans_read_back_as_span_to_rows(conn: duckdb.DuckDBPyConnection) -> None:
    spans = [image(i) for i in range(6)]
    spans[1].attributes["image.width"] = "1024"  # coerced: original kept for `spans`
    spans[2].attributes["custom.list"] = [1, "a"]  # unmapped
    spans[3].attributes["image.cost_usd"] = float("inf")
    spans[4].attributes["image.height"] = 2**40  # out of INTEGER range → NULL column
    spans[5].status_code, spans[5].status_message = "ERROR", "boom"
    spans[5].events = [{"name": "retry", "time_unix_nano": T0, "attributes": {"n": 1}}]
    chat = SpanRecord(
        "c" * 32,
        "d" * 16,
        "chat gpt-4o",
        T0,
        T0 + 9,
        attributes={"gen_ai.operation.name": "chat", "aperture.team": "t"},
    )
    write_tables(conn, spans_to_batch([*spans, chat]))
    assert_reads_back(conn, [*spans, chat])
    assert (
        fetch_df(
            conn, "SELECT height FROM image_spans WHERE span_id = ?", [spans[4].span_id]
        ).item()
        is None
    )
    assert conn.execute("SELECT count(*) FROM request_spans").fetchall() == [(1,)]


def test_rewriting_a_batch_adds_nothing(conn: duckdb.DuckDBPyConnection) -> None:
    spans = [image(i) for i in range(10)]
    batch = spans_to_batch(spans)
    write_tables(conn, batch)
    write_tables(conn, batch)
    write_tables(conn, merge_batches([spans_to_batch(spans[:4]), spans_to_batch(spans[2:6])]))
    # a re-export inside a later, wider batch is still caught
    write_tables(conn, spans_to_batch([*spans[7:], image(10), image(11)]))
    for table, n in (("image_spans", 12), ("spans", 12), ("span_meta", 1)):
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchall() == [(n,)], table
    assert conn.execute(
        "SELECT count(*) FROM (SELECT DISTINCT trace_id, span_id FROM spans)"
    ).fetchall() == [(12,)]


def test_rows_without_a_time_are_checked_against_the_whole_table(
    conn: duckdb.DuckDBPyConnection,
) -> None:
    rows = [{"trace_id": "t", "span_id": str(i), "cost_usd": 1.0} for i in range(3)]
    insert_rows(conn, "image_spans", rows)
    insert_rows(conn, "image_spans", [*rows, {"trace_id": "t", "span_id": "9"}])
    assert conn.execute("SELECT count(*) FROM image_spans").fetchall() == [(4,)]
    # rows inserted straight into image_spans have no `spans` row
    assert conn.execute("SELECT count(*) FROM spans").fetchall() == [(0,)]


def test_threads_writing_the_same_batch_store_it_once(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    batch = spans_to_batch([image(i) for i in range(50)])
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with open_store(path) as c:
                write_tables(c, batch)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    with open_store(path, read_only=True) as c:
        assert c.execute("SELECT count(*) FROM image_spans").fetchall() == [(50,)]


_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.lists(st.integers(0, 9), max_size=2),
)
_keys = st.sampled_from([key for _, key, _ in IMAGE_COLUMNS] + ["other.key", "x"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(_keys, _values, max_size=6), min_size=1, max_size=5))
def test_any_attribute_values_read_back_as_span_to_rows(attrs: list[dict[str, Any]]) -> None:
    # json_merge_patch cannot express a null value: absent and null read the same
    attrs = [{k: v for k, v in a.items() if v is not None} for a in attrs]
    spans = [image(i, a) for i, a in enumerate(attrs)]
    c = duckdb.connect()
    migrate(c)
    write_tables(c, spans_to_batch(spans))
    assert_reads_back(c, spans)
