"""Span → store rows: the one pure mapping shared by the exporter and the receiver.

``span_to_rows`` turns a :class:`SpanRecord` into rows for ``spans`` and, when
the span is an image span (name ``image``) or a chat request span
(``gen_ai.operation.name = "chat"``), for ``image_spans`` / ``request_spans``.
Attribute → column tables are data, not branches. Values of the wrong type
are coerced when the meaning is clear ("1024" → 1024) and become NULL
otherwise, so one sloppy client cannot fail a whole batch.

Example::

    rows = span_to_rows(record)
    rows["spans"][0]["name"]          # "image"
    rows["image_spans"][0]["width"]   # 1024
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from collector import semconv as sc
from collector.otlp import from_otlp_json, from_otlp_proto
from collector.record import SpanRecord, to_json
from collector.sdkspans import from_readable_span

__all__ = [
    "IMAGE_COLUMNS",
    "REQUEST_COLUMNS",
    "SpanRecord",
    "from_otlp_json",
    "from_otlp_proto",
    "from_readable_span",
    "image_row",
    "request_row",
    "span_row",
    "span_to_rows",
    "spans_to_rows",
]

_EPOCH = datetime(1970, 1, 1)
_INT32 = 2**31 - 1
_INT64 = 2**63 - 1
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _int_within(limit: int) -> Callable[[Any], int | None]:
    def coerce(value: Any) -> int | None:
        if type(value) is int:
            return value if -limit <= value <= limit else None
        if value is None:
            return None
        number = _number(value)
        if number is None or (isinstance(number, float) and not math.isfinite(number)):
            return None
        result = round(number)
        return result if -limit <= result <= limit else None

    return coerce


as_int32 = _int_within(_INT32)
as_int64 = _int_within(_INT64)


def as_float(value: Any) -> float | None:
    if type(value) is float or value is None:
        return value
    number = _number(value)
    return None if number is None else float(number)


def as_str(value: Any) -> str | None:
    if type(value) is str or value is None:
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(as_str(v) or "" for v in value)
    if isinstance(value, dict):
        return to_json(value)
    return str(value)


def as_json_text(value: Any) -> str | None:
    """Structured content (e.g. gen_ai.input.messages) kept as JSON text."""
    if value is None or isinstance(value, str):
        return value
    return to_json(value)


def as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    return None


Coerce = Callable[[Any], Any]

#: The coercion of each ``image_spans`` column; the attribute keys come from ``semconv``.
_IMAGE_COERCE: dict[str, Coerce] = {
    "image_index": as_int32, "bytes": as_int64, "width": as_int32, "height": as_int32,
    "tokens_estimated": as_int64, "tokens_billed": as_int64, "cost_usd": as_float,
    "text_height_px": as_float, "tokens_low_estimate": as_int64, "propensity": as_float,
}

#: image_spans column ← span attribute, with its coercion
IMAGE_COLUMNS: tuple[tuple[str, str, Coerce], ...] = tuple(
    (column, key, _IMAGE_COERCE.get(column, as_str)) for column, key in sc.IMAGE_COLUMN_KEYS
)

#: request_spans column ← span attribute, with its coercion
REQUEST_COLUMNS: tuple[tuple[str, str, Coerce], ...] = (
    ("request_id", sc.APERTURE_REQUEST_ID, as_str),
    ("team", sc.APERTURE_TEAM, as_str),
    ("requested_model", sc.APERTURE_REQUESTED_MODEL, as_str),
    ("model", sc.GEN_AI_REQUEST_MODEL, as_str),
    ("response_model", sc.GEN_AI_RESPONSE_MODEL, as_str),
    ("provider", sc.APERTURE_PROVIDER, as_str),
    ("ruleset_version", sc.APERTURE_RULESET_VERSION, as_str),
    ("arm", sc.APERTURE_RULESET_ARM, as_str),
    ("rule_id", sc.APERTURE_RULE_ID, as_str),
    ("route", sc.APERTURE_ROUTE, as_str),
    ("propensity", sc.APERTURE_ROUTE_PROPENSITY, as_float),
    ("error_type", sc.ERROR_TYPE, as_str),
    ("input_tokens", sc.GEN_AI_USAGE_INPUT_TOKENS, as_int64),
    ("output_tokens", sc.GEN_AI_USAGE_OUTPUT_TOKENS, as_int64),
    ("estimated_cost_usd", sc.APERTURE_COST_ESTIMATED_USD, as_float),
    ("billed_cost_usd", sc.APERTURE_COST_BILLED_USD, as_float),
    ("retry_count", sc.APERTURE_RETRY_COUNT, as_int32),
    ("fallback_path", sc.APERTURE_FALLBACK_PATH, as_str),
    ("task", sc.APERTURE_TASK, as_str),
    ("reference_id", sc.APERTURE_REFERENCE_ID, as_str),
    ("n_images", sc.APERTURE_IMAGE_COUNT, as_int32),
    ("replay", sc.APERTURE_REPLAY, as_bool),
    ("shadow", sc.APERTURE_SHADOW, as_bool),
    ("input_text", sc.GEN_AI_INPUT_MESSAGES, as_json_text),
    ("output_text", sc.APERTURE_OUTPUT_TEXT, as_str),
    ("cache_hit", sc.APERTURE_CACHE_HIT, as_bool),
    ("cache_saved_usd", sc.APERTURE_CACHE_SAVED_USD, as_float),
)


def ns_to_us(ns: int | None) -> int | None:
    """Unix ns → Unix µs, the store's TIMESTAMP precision; None for a missing time.

    Rows carry TIMESTAMP values as integer µs since the epoch (UTC): building
    datetime objects costs more than the rest of the row (see benchmarks/ingest).
    ``insert_rows`` takes ints and datetimes alike.
    """
    if not ns or ns < 0 or ns > _INT64:  # JSON clients can send any integer
        return None
    return ns // 1000


def ns_to_datetime(ns: int | None) -> datetime | None:
    """Unix nanoseconds → naive UTC datetime (µs); None for a missing/absurd time."""
    us = ns_to_us(ns)
    if us is None:
        return None
    try:
        return _EPOCH + timedelta(microseconds=us)
    except OverflowError:
        return None


def span_row(
    span: SpanRecord, _resource_json: dict[int, str | None] | None = None
) -> dict[str, Any]:
    """The ``spans`` row of one span (attributes as JSON text).

    ``_resource_json`` is a per-batch memo (resource dict id → JSON text): the
    spans of one export share one resource object, so it is encoded once.
    """
    start = ns_to_us(span.start_ns)
    end = ns_to_us(span.end_ns)
    resource = span.resource
    if _resource_json is None:
        resource_json = to_json(resource) if resource else None
    else:
        key = id(resource)
        if key not in _resource_json:
            _resource_json[key] = to_json(resource) if resource else None
        resource_json = _resource_json[key]
    return {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "name": span.name,
        "kind": span.kind,
        "start_ts": start,
        "end_ts": end,
        "duration_ms": _duration_ms(span),
        "status_code": span.status_code,
        "status_message": span.status_message or None,
        "service_name": as_str(resource.get("service.name")),
        "attributes": to_json(span.attributes),
        "events": to_json(span.events) if span.events else None,
        "resource": resource_json,
    }


def _duration_ms(span: SpanRecord) -> float | None:
    if ns_to_us(span.start_ns) and ns_to_us(span.end_ns):
        return (span.end_ns - span.start_ns) / 1e6
    return None


def _typed_row(span: SpanRecord, columns: Any) -> dict[str, Any]:
    get = span.attributes.get
    row = {column: coerce(get(key)) for column, key, coerce in columns}
    row["trace_id"] = span.trace_id
    row["span_id"] = span.span_id
    row["ts"] = ns_to_us(span.start_ns)
    return row


def image_row(span: SpanRecord) -> dict[str, Any]:
    """The ``image_spans`` row of an ``image`` span."""
    image = _typed_row(span, IMAGE_COLUMNS)
    image["request_span_id"] = span.parent_span_id
    return image


def request_row(span: SpanRecord) -> dict[str, Any]:
    """The ``request_spans`` row of a chat request span."""
    request = _typed_row(span, REQUEST_COLUMNS)
    request["duration_ms"] = _duration_ms(span)
    failed = span.status_code == "ERROR" or request["error_type"] is not None
    request["status"] = "error" if failed else "ok"
    return request


def span_to_rows(
    span: SpanRecord, _resource_json: dict[int, str | None] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Rows for one span: always ``spans``; ``image_spans``/``request_spans`` when they apply.

    This is what readers see through the store's views; the store itself is
    written in bulk by ``collector.columns.spans_to_batch`` (image spans
    stored once, their ``spans`` row rebuilt by the view).
    """
    rows: dict[str, list[dict[str, Any]]] = {"spans": [span_row(span, _resource_json)]}
    if span.name == sc.IMAGE_SPAN_NAME:
        rows["image_spans"] = [image_row(span)]
    if span.attributes.get(sc.GEN_AI_OPERATION_NAME) == sc.OPERATION_CHAT:
        rows["request_spans"] = [request_row(span)]
    return rows


def spans_to_rows(spans: Iterable[SpanRecord]) -> dict[str, list[dict[str, Any]]]:
    """``span_to_rows`` over many spans, merged per table (for one bulk insert each)."""
    merged: dict[str, list[dict[str, Any]]] = {"spans": [], "image_spans": [], "request_spans": []}
    memo: dict[int, str | None] = {}
    for span in spans:
        for table, table_rows in span_to_rows(span, memo).items():
            merged[table].extend(table_rows)
    return merged
