"""The bulk ingest path's shortcuts: each must store exactly what the slow path stores.

``collector.columns`` reads the text columns of image spans in one struct
conversion and only looks for unmapped keys when the stored values do not add
up to the keys; ``collector.store.write_tables`` checkpoints big batches at
commit and skips the migration check when the file is current. These tests
pin what the data looks like afterwards, never how long it took.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from collector.columns import image_table, spans_to_batch
from collector.record import SpanRecord
from collector.schema import MIGRATIONS, latest_version, migrate
from collector.store import BULK_ROWS, _stored_version, open_store, write_tables

T0 = 1_760_000_000_000_000_000
RESOURCE = {"service.name": "gw"}


def image(i: int, **extra: Any) -> SpanRecord:
    attrs: dict[str, Any] = {
        "image.index": i % 4,
        "image.sha256": f"{i:064x}",
        "image.width": 640,
        "image.height": 480,
        "image.detail": "high",
        "image.cost_usd": 0.25,
        "gen_ai.request.model": "gpt-4o",
        "aperture.team": "t",
        **extra,
    }
    return SpanRecord(
        trace_id=f"{i // 2:032x}",
        span_id=f"{i + 1:016x}",
        name="image",
        start_ns=T0 + i * 1_000,
        end_ns=T0 + i * 1_000 + 500,
        parent_span_id=f"{i // 2 + 10**6:016x}",
        attributes=attrs,
        resource=RESOURCE,
    )


def extra_attributes(spans: list[SpanRecord]) -> list[dict[str, Any] | None]:
    table, _ = image_table(spans)
    return [None if v is None else json.loads(v) for v in table["extra_attributes"].to_pylist()]


def test_plain_spans_need_no_extra_attributes() -> None:
    assert extra_attributes([image(i) for i in range(5)]) == [None] * 5


def test_a_text_column_holding_a_number_keeps_the_original_for_that_span_only() -> None:
    spans = [image(0), image(1, **{"aperture.team": 7}), image(2)]
    table, _ = image_table(spans)
    assert table["team"].to_pylist() == ["t", "7", "t"]
    assert extra_attributes(spans) == [None, {"aperture.team": 7}, None]


@pytest.mark.parametrize(
    ("key", "value", "column", "stored"),
    [
        ("image.width", 1024.0, "width", 1024),  # pyarrow alone would take it as an integer
        ("image.cost_usd", 1, "cost_usd", 1.0),  # ... and this as a float
        ("image.height", True, "height", None),
        ("image.detail", ["a", "b"], "detail", "a,b"),
    ],
)
def test_values_the_column_does_not_hold_exactly_are_kept(
    key: str, value: Any, column: str, stored: Any
) -> None:
    spans = [image(0), image(1, **{key: value})]
    table, _ = image_table(spans)
    assert table[column].to_pylist()[1] == stored
    assert extra_attributes(spans) == [None, {key: value}]


def test_unmapped_keys_are_found_in_any_span_of_the_batch() -> None:
    spans = [image(i) for i in range(6)]
    spans[4].attributes["custom.flag"] = "on"
    assert extra_attributes(spans) == [None] * 4 + [{"custom.flag": "on"}, None]


def test_a_mapped_key_without_a_value_is_not_mistaken_for_a_stored_one() -> None:
    # stored values no longer add up to the keys: the per-span look finds nothing extra
    spans = [image(0, **{"image.format": None}), image(1)]
    table, _ = image_table(spans)
    assert table["format"].to_pylist() == [None, None]
    assert extra_attributes(spans) == [None, None]


def test_a_bulk_batch_is_checkpointed_at_commit_and_stored_once(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    wal = Path(f"{path}.wal")
    small = spans_to_batch([image(i) for i in range(10)])
    bulk = spans_to_batch([image(i) for i in range(BULK_ROWS)])
    with open_store(path) as conn:
        write_tables(conn, small)
        assert wal.exists() and wal.stat().st_size > 0  # small batches go through the log
    with open_store(path) as conn:
        write_tables(conn, bulk)
        assert not wal.exists() or wal.stat().st_size == 0  # written to the file already
        write_tables(conn, bulk)  # a re-export adds nothing
        rows = conn.execute("SELECT count(*), count(DISTINCT span_id) FROM spans").fetchall()
    assert rows == [(BULK_ROWS, BULK_ROWS)]
    with open_store(path, read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM image_spans").fetchall() == [(BULK_ROWS,)]


def test_a_small_batch_after_a_bulk_one_uses_the_default_settings(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.duckdb") as conn:
        write_tables(conn, spans_to_batch([image(i) for i in range(BULK_ROWS)]))
        write_tables(conn, spans_to_batch([image(BULK_ROWS + 1)]))
        default = duckdb.connect().execute("SELECT current_setting('checkpoint_threshold')")
        setting = conn.execute("SELECT current_setting('checkpoint_threshold')").fetchall()
        assert setting == default.fetchall()


def test_the_stored_version_decides_whether_an_open_migrates(tmp_path: Path) -> None:
    conn = duckdb.connect(str(tmp_path / "fresh.duckdb"))
    assert _stored_version(conn) == 0
    migrate(conn)
    assert _stored_version(conn) == latest_version()
    conn.close()
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as old:  # a file that stopped at version 1
        migrate(old, [m for m in MIGRATIONS if m.version == 1])
    with open_store(path) as conn:
        assert _stored_version(conn) == latest_version()
        assert conn.execute("SELECT count(*) FROM image_spans").fetchall() == [(0,)]
