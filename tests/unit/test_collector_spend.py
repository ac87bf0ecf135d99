"""spend_report over a handful of hand-made image rows, with hand-computed answers."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta

import duckdb
import pytest
from rich.console import Console

from collector import analysis
from collector.schema import migrate
from collector.spend import parse_since, spend_report, to_csv, to_json, to_table, to_tables
from collector.store import insert_rows

# cost per token: 2.5e-6 (gpt-4o), 3e-6 (claude)
ROWS = [
    # id, model, team, day, detail, w, h, billed, low, text_px, cost
    ("a", "gpt-4o", "docs", 1, "high", 2048, 1536, 1105, 85, 30.0, 1105 * 2.5e-6),  # large text
    ("b", "gpt-4o", "docs", 1, "auto", 400, 300, 255, 85, 8.0, 255 * 2.5e-6),  # small
    ("c", "gpt-4o", "ops", 2, "high", 4000, 3000, 1105, 85, 8.0, 1105 * 2.5e-6),  # needed
    ("d", "gpt-4o", "ops", 2, "low", 1024, 768, 85, 85, 40.0, 85 * 2.5e-6),  # already low
    ("e", "claude", "ops", 3, "high", 1000, 1000, 1334, None, 25.0, 1334 * 3e-6),  # no low estimate
]


@pytest.fixture
def conn() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    migrate(c)
    insert_rows(
        c,
        "image_spans",
        [
            {
                "trace_id": "t",
                "span_id": sid,
                "model": model,
                "team": team,
                "ts": datetime(2025, 3, day, 12),
                "detail": detail,
                "width": w,
                "height": h,
                "tokens_estimated": billed,
                "tokens_billed": billed,
                "tokens_low_estimate": low,
                "text_height_px": px,
                "cost_usd": cost,
            }
            for sid, model, team, day, detail, w, h, billed, low, px, cost in ROWS
        ],
    )
    return c


def test_by_model(conn: duckdb.DuckDBPyConnection) -> None:
    report = spend_report(conn, by="model")
    assert [g.key for g in report.groups] == ["gpt-4o", "claude"]  # gpt-4o spent more
    gpt = report.groups[0]
    assert gpt.images == 4 and gpt.tokens_billed == 1105 + 255 + 1105 + 85
    assert gpt.spend_usd == pytest.approx(2550 * 2.5e-6)
    assert report.spend_usd == pytest.approx(2550 * 2.5e-6 + 1334 * 3e-6)
    assert report.images == 5


def test_detail_not_needed(conn: duckdb.DuckDBPyConnection) -> None:
    u = spend_report(conn).unneeded_detail
    # a (text 30px at high), b (400px at auto), e (text 25px, but no low estimate → no saving)
    assert (u.images, u.large_text, u.small_image) == (3, 2, 1)
    assert u.savings_usd == pytest.approx((1105 - 85) * 2.5e-6 + (255 - 85) * 2.5e-6)
    assert [i.span_id for i in u.examples] == ["a", "b", "e"]
    assert u.examples[0].savings_usd == pytest.approx(1020 * 2.5e-6)
    stricter = spend_report(conn, text_height_px=35.0).unneeded_detail
    assert (stricter.images, stricter.large_text) == (1, 0)


@pytest.mark.parametrize(
    ("by", "keys"),
    [
        ("team", ["ops", "docs"]),
        ("day", ["2025-03-03", "2025-03-01", "2025-03-02"]),
        ("detail", ["high", "auto", "low"]),
        ("size", ["<=1024", "<=2048", ">2048", "<=512"]),  # ties break by key
    ],
)
def test_groupings(conn: duckdb.DuckDBPyConnection, by: str, keys: list[str]) -> None:
    report = spend_report(conn, by=by)
    assert [g.key for g in report.groups] == keys
    assert sum(g.images for g in report.groups) == 5


def test_since_and_top(conn: duckdb.DuckDBPyConnection) -> None:
    report = spend_report(conn, by="day", since="2025-03-02", top=2)
    assert {g.key for g in report.groups} == {"2025-03-02", "2025-03-03"}
    assert [i.span_id for i in report.top_images] == ["e", "c"]
    assert report.unneeded_detail.images == 1  # only e is in range
    empty = spend_report(conn, since=datetime(2030, 1, 1))
    assert (empty.images, empty.spend_usd, empty.groups, empty.top_images) == (0, 0.0, [], [])
    assert empty.unneeded_detail.savings_usd == 0.0


def test_refusals(conn: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(ValueError, match="by must be"):
        spend_report(conn, by="colour")
    with pytest.raises(ValueError, match="top"):
        spend_report(conn, top=-1)
    with pytest.raises(ValueError, match="since"):
        spend_report(conn, since="last tuesday")


def test_parse_since() -> None:
    now = datetime(2025, 3, 10, 12)
    assert parse_since("7d", now) == datetime(2025, 3, 3, 12)
    assert parse_since("36h", now) == datetime(2025, 3, 9)
    assert parse_since("1w", now) == parse_since(timedelta(days=7), now)
    assert parse_since("2025-03-01T10:00:00+02:00", now) == datetime(2025, 3, 1, 8)
    assert parse_since(None, now) is None


def test_renderers(conn: duckdb.DuckDBPyConnection) -> None:
    report = spend_report(conn, by="team")
    rows = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert [r["team"] for r in rows] == ["ops", "docs"] and rows[1]["images"] == "2"
    assert rows[1]["unneeded_detail_images"] == "2"
    assert float(rows[1]["savings_usd"]) == pytest.approx(1190 * 2.5e-6)
    parsed = json.loads(to_json(report))
    assert parsed["by"] == "team" and parsed["unneeded_detail"]["images"] == 3
    assert parsed["top_images"][0]["ts"] == "2025-03-03T12:00:00"
    console = Console(record=True, width=160)
    for table in to_tables(report):
        console.print(table)
    text = console.export_text()
    assert "Image spend by team" in text and "saveable at low detail" in text
    assert "Costliest images" in text and to_table(report).row_count == 2


def test_missing_values_group_as_unknown(conn: duckdb.DuckDBPyConnection) -> None:
    insert_rows(conn, "image_spans", [{"trace_id": "t", "span_id": "z", "cost_usd": 0.5}])
    for by in ("model", "team", "day", "detail", "size"):
        report = spend_report(conn, by=by)
        assert report.groups[0].key == "unknown" and report.groups[0].spend_usd == 0.5, by
    assert spend_report(conn).unneeded_detail.images == 3  # the bare row is not counted


def _one(conn: duckdb.DuckDBPyConnection, span_id: str, **values: object) -> None:
    insert_rows(conn, "image_spans", [{"trace_id": "t", "span_id": span_id, **values}])


def test_a_stored_unknown_and_a_missing_key_are_one_group(conn: duckdb.DuckDBPyConnection) -> None:
    _one(conn, "y", model="unknown", cost_usd=0.25)
    _one(conn, "z", cost_usd=0.25)
    keys = [g.key for g in spend_report(conn, by="model").groups]
    assert keys.count("unknown") == 1
    assert analysis.spend_by(conn, "model")["key"].to_list() == keys
    assert spend_report(conn, by="model").groups[0].spend_usd == pytest.approx(0.5)


def test_equal_spend_is_ordered_by_key_text(conn: duckdb.DuckDBPyConnection) -> None:
    for sid, team in (("y", "zeta"), ("z", None), ("x", "alpha")):
        _one(conn, sid, team=team, cost_usd=1.0)
    keys = [g.key for g in spend_report(conn, by="team").groups]
    assert keys[:3] == ["alpha", "unknown", "zeta"]
    assert analysis.spend_by(conn, "team")["key"].to_list() == keys


def test_detail_case_and_missing_sizes(conn: duckdb.DuckDBPyConnection) -> None:
    base = {"tokens_billed": 765, "tokens_estimated": 765, "tokens_low_estimate": 85, "cost_usd": 765e-6}
    _one(conn, "up", detail="HIGH", width=300, height=300, text_height_px=5.0, **base)  # counted
    _one(conn, "half", detail="high", width=None, height=300, text_height_px=5.0, **base)  # not small
    report = spend_report(conn)
    assert report.unneeded_detail.images == 4 and report.unneeded_detail.small_image == 2
    listed = set(analysis.unneeded_detail(conn)["span_id"])
    assert "up" in listed and "half" not in listed
    assert len(listed) == report.unneeded_detail.images
