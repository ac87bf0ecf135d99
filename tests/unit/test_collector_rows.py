"""span_to_rows on hand-built SpanRecords."""

from __future__ import annotations

import json
from datetime import datetime

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.rows import (
    IMAGE_COLUMNS,
    REQUEST_COLUMNS,
    SpanRecord,
    ns_to_datetime,
    span_to_rows,
    spans_to_rows,
)
from collector.schema import migrate
from collector.store import insert_rows

T0 = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z

IMAGE_ATTRS = {
    "image.index": 2,
    "image.sha256": "ab" * 32,
    "image.bytes": 123_456,
    "image.width": 2048,
    "image.height": 1536,
    "image.format": "png",
    "image.source": "base64",
    "image.detail": "high",
    "image.tokens_estimated": 1105,
    "image.tokens_billed": 1105,
    "image.cost_usd": 0.0027625,
    "image.transcoded_from": "heic",
    "image.resized_to": "1536x1152",
    "gen_ai.provider.name": "openai",
    "aperture.provider": "openai",
    "gen_ai.request.model": "gpt-4o",
    "aperture.team": "claims",
    "aperture.ruleset.version": "v7",
    "aperture.rule.id": "small-text-high",
    "aperture.ruleset.arm": "canary",
    "aperture.requested_model": "aperture/auto",
    "aperture.task": "ocr",
    "aperture.reference_id": "doc-17",
    "aperture.request_id": "req-1",
    "aperture.image.text_height_px": 14.5,
    "aperture.image.tokens_low_estimate": 85,
    "aperture.route.propensity": 0.9,
}


def record(name: str, attributes: dict[str, object], **kw: object) -> SpanRecord:
    fields: dict[str, object] = {
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "span_id": "b7ad6b7169203331",
        "parent_span_id": "00f067aa0ba902b7",
        "name": name,
        "start_ns": T0,
        "end_ns": T0 + 2_500_000,
        "attributes": attributes,
        "resource": {"service.name": "gateway"},
    }
    fields.update(kw)
    return SpanRecord(**fields)  # type: ignore[arg-type]


def test_image_span_maps_every_attribute_to_its_column() -> None:
    rows = span_to_rows(record("image", IMAGE_ATTRS))
    assert set(rows) == {"spans", "image_spans"}
    image = rows["image_spans"][0]
    for column, attribute, _ in IMAGE_COLUMNS:
        assert image[column] == IMAGE_ATTRS[attribute], column
    assert image["request_span_id"] == "00f067aa0ba902b7"
    assert image["ts"] == 1_700_000_000_123_456  # µs since the epoch
    assert ns_to_datetime(T0) == datetime(2023, 11, 14, 22, 13, 20, 123456)
    span = rows["spans"][0]
    assert span["duration_ms"] == pytest.approx(2.5)
    assert span["service_name"] == "gateway"
    assert json.loads(span["attributes"]) == IMAGE_ATTRS


def test_chat_span_makes_a_request_row() -> None:
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "aperture.provider": "anthropic",
        "gen_ai.request.model": "claude-sonnet-4",
        "gen_ai.response.model": "claude-sonnet-4-20250514",
        "gen_ai.usage.input_tokens": 1600,
        "gen_ai.usage.output_tokens": 120,
        "aperture.route": "claude-sonnet-4:default",
        "aperture.fallback_path": ["gpt-4o:high", "claude-sonnet-4:default"],
        "aperture.retry_count": 1,
        "aperture.cost.estimated_usd": 0.006,
        "aperture.cost.billed_usd": 0.0066,
        "aperture.image_count": 3,
        "aperture.replay": True,
        "gen_ai.input.messages": [{"role": "user", "content": "read this"}],
        "aperture.output_text": "INVOICE 42",
    }
    rows = span_to_rows(record("chat claude-sonnet-4", attrs, parent_span_id=None))
    assert set(rows) == {"spans", "request_spans"}
    req = rows["request_spans"][0]
    assert req["status"] == "ok" and req["error_type"] is None
    assert req["model"] == "claude-sonnet-4" and req["response_model"] == "claude-sonnet-4-20250514"
    assert (req["input_tokens"], req["output_tokens"], req["n_images"]) == (1600, 120, 3)
    assert req["fallback_path"] == "gpt-4o:high,claude-sonnet-4:default"
    assert req["replay"] is True and req["retry_count"] == 1
    assert json.loads(req["input_text"]) == [{"role": "user", "content": "read this"}]
    assert req["output_text"] == "INVOICE 42"
    assert req["duration_ms"] == pytest.approx(2.5)
    assert rows["spans"][0]["parent_span_id"] is None


@pytest.mark.parametrize(
    ("status", "attrs", "expected"),
    [
        ("ERROR", {}, "error"),
        ("UNSET", {"error.type": "rate_limited"}, "error"),
        ("OK", {}, "ok"),
    ],
)
def test_request_status(status: str, attrs: dict[str, object], expected: str) -> None:
    span = record("chat x", {"gen_ai.operation.name": "chat", **attrs}, status_code=status)
    assert span_to_rows(span)["request_spans"][0]["status"] == expected


def test_other_spans_only_reach_the_generic_table() -> None:
    span = record(
        "upstream openai",
        {"aperture.attempt": 2, "http.response.status_code": 429},
        events=[{"name": "retry", "time_unix_nano": T0, "attributes": {"after_s": 1.5}}],
    )
    rows = span_to_rows(span)
    assert set(rows) == {"spans"}
    assert json.loads(rows["spans"][0]["events"])[0]["attributes"] == {"after_s": 1.5}


def test_missing_attributes_become_nulls() -> None:
    rows = span_to_rows(record("image", {}, resource={}))
    image = rows["image_spans"][0]
    assert all(image[column] is None for column, _, _ in IMAGE_COLUMNS)
    assert rows["spans"][0]["service_name"] is None
    assert rows["spans"][0]["resource"] is None
    req = span_to_rows(record("chat", {"gen_ai.operation.name": "chat"}))["request_spans"][0]
    assert all(req[c] is None for c, _, _ in REQUEST_COLUMNS)


def test_sloppy_values_are_coerced_or_nulled() -> None:
    attrs = {
        "image.width": "1024",
        "image.height": 768.0,
        "image.bytes": 2**70,  # does not fit BIGINT
        "image.index": True,  # a bool is not a position
        "image.cost_usd": "0.5",
        "image.tokens_billed": "many",
        "aperture.image.text_height_px": float("nan"),
        "image.detail": ["high"],
    }
    image = span_to_rows(record("image", attrs))["image_spans"][0]
    assert (image["width"], image["height"], image["bytes"], image["image_index"]) == (
        1024,
        768,
        None,
        None,
    )
    assert image["cost_usd"] == 0.5 and image["tokens_billed"] is None
    assert image["detail"] == "high"
    # NaN is kept out of the JSON text, which must stay strict JSON
    assert (
        json.loads(span_to_rows(record("image", attrs))["spans"][0]["attributes"])[
            "aperture.image.text_height_px"
        ]
        == "nan"
    )


@pytest.mark.parametrize(("start", "end"), [(0, 0), (-5, 10), (2**70, 2**70 + 1)])
def test_missing_or_absurd_times(start: int, end: int) -> None:
    rows = span_to_rows(record("x", {}, start_ns=start, end_ns=end))["spans"][0]
    assert rows["start_ts"] is None and rows["duration_ms"] is None


def test_spans_to_rows_merges_per_table() -> None:
    merged = spans_to_rows(
        [
            record("image", IMAGE_ATTRS, span_id="1" * 16),
            record("image", IMAGE_ATTRS, span_id="2" * 16),
            record("chat", {"gen_ai.operation.name": "chat"}, span_id="3" * 16),
        ]
    )
    assert {k: len(v) for k, v in merged.items()} == {
        "spans": 3,
        "image_spans": 2,
        "request_spans": 1,
    }


anything = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats()
    | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
attribute_keys = st.sampled_from(
    [key for _, key, _ in IMAGE_COLUMNS + REQUEST_COLUMNS] + ["gen_ai.operation.name", "x"]
)


@settings(max_examples=40, deadline=None)
@given(
    attrs=st.dictionaries(attribute_keys, anything, max_size=12),
    name=st.sampled_from(["image", "chat", "other"]),
    start=st.integers(min_value=-(2**65), max_value=2**65),
)
def test_any_attribute_values_insert_cleanly(
    attrs: dict[str, object], name: str, start: int
) -> None:
    """Whatever a client sends, the rows fit the store's column types (no failed batch)."""
    if name == "chat":
        attrs = {**attrs, "gen_ai.operation.name": "chat"}
    conn = duckdb.connect()
    migrate(conn)
    rows = span_to_rows(record(name, attrs, start_ns=start, end_ns=start + 7))
    for table, table_rows in rows.items():
        insert_rows(conn, table, table_rows)
    assert conn.execute("SELECT count(*) FROM spans").fetchall() == [(1,)]
