"""Spans → Arrow columns for the store: the bulk form of ``collector.rows.span_to_rows``.

The exporter, the OTLP receiver and the ingest benchmark all write through
``spans_to_batch``. Image spans, the bulk of the traffic, are built column by
column straight into one Arrow table for ``image_span_log`` (see
``collector.schema``): one pass per attribute, a type check per column, and
coercion only for the columns that need it. Their attributes are not written
as JSON: the ``spans`` view rebuilds them from the typed columns, so only the
attributes the columns do not hold exactly (unmapped keys, values coerced or
out of range, non-finite floats) go to ``extra_attributes``. Other spans
(requests, upstream attempts) go through ``span_to_rows`` as dict rows.

Example::

    batch = spans_to_batch(records)
    batch["image_spans"].num_rows   # image spans, as an Arrow table
    batch["spans"]                  # dict rows of the other spans
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from types import NoneType
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from collector.record import SpanRecord, to_json
from collector.rows import (
    IMAGE_COLUMNS,
    as_float,
    as_int32,
    as_int64,
    as_str,
    request_row,
    span_row,
)
from collector.schema import SPAN_META_COLUMNS

#: table → dict rows, or (image_spans) one Arrow table
Batch = dict[str, Any]

_INT32 = 2**31 - 1
_INT64 = 2**63 - 1
_ARROW = {"BIGINT": pa.int64(), "VARCHAR": pa.string(), "JSON": pa.string()}
_MAPPED = frozenset(key for _, key, _ in IMAGE_COLUMNS)
# coercion → (Arrow type, the Python types it stores as they are)
_ARROW_OF: dict[Any, tuple[pa.DataType, frozenset[type]]] = {
    as_int32: (pa.int32(), frozenset({int, NoneType})),
    as_int64: (pa.int64(), frozenset({int, NoneType})),
    as_float: (pa.float64(), frozenset({float, NoneType})),
    as_str: (pa.string(), frozenset({str, NoneType})),
}
_IMAGE_PLAN = tuple(
    (column, key, coerce, *_ARROW_OF[coerce]) for column, key, coerce in IMAGE_COLUMNS
)
# Text columns are read in one pass: pyarrow converts the attribute dicts to a struct
# of the text keys (other keys ignored) and refuses any value that is not text, so the
# batch is exact when it succeeds. Numbers are not: pyarrow would take 3.0 as an
# integer and 3 as a float, so those columns keep the per-column type check.
_TEXT_PLAN = tuple(p for p in _IMAGE_PLAN if p[2] is as_str)
_NUMBER_PLAN = tuple(p for p in _IMAGE_PLAN if p[2] is not as_str)
_TEXT_STRUCT = pa.struct([(key, pa.string()) for _, key, *_ in _TEXT_PLAN])


def _typed(
    values: list[Any], arrow_type: pa.DataType, allowed: frozenset[type], coerce: Any
) -> tuple[pa.Array, list[int]]:
    """Column values → Arrow array, and the rows whose value the column does not hold exactly."""
    if allowed.issuperset(map(type, values)):
        try:
            array = pa.array(values, type=arrow_type)
        except (pa.ArrowInvalid, OverflowError):  # an int out of the column's range
            pass
        else:
            if arrow_type == pa.float64() and not pc.all(pc.is_finite(array)).as_py():
                bad = [i for i, v in enumerate(values) if v is not None and not math.isfinite(v)]
                return array, bad
            return array, []
    coerced = [coerce(v) for v in values]
    inexact = [
        i
        for i, (v, c) in enumerate(zip(values, coerced, strict=True))
        if v is not None and (v is not c or (type(v) is float and not math.isfinite(v)))
    ]
    return pa.array(coerced, type=arrow_type), inexact


def _microseconds(ns_values: list[Any]) -> pa.Array:
    """Unix ns → µs as ``rows.ns_to_us`` reads them: null when missing, negative or absurd."""
    try:
        ns = pa.array(ns_values, type=pa.int64())
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        ns = pa.array(
            [v if type(v) is int and 0 < v <= _INT64 else None for v in ns_values], pa.int64()
        )
    return pc.divide(pc.if_else(pc.greater(ns, 0), ns, None), 1000)


def _text_columns(attrs: list[dict[str, Any]]) -> dict[str, pa.Array] | None:
    """The text columns in one conversion; None when some value is not a ``str``."""
    try:
        struct = pa.array(attrs, type=_TEXT_STRUCT)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return None
    if struct.null_count:  # an attribute dict that is None: not a span pyarrow should see
        return None
    return {column: struct.field(i) for i, (column, *_) in enumerate(_TEXT_PLAN)}


def image_table(images: list[SpanRecord]) -> tuple[pa.Table, pa.Table]:
    """Image spans → (rows for ``image_span_log``, new rows for ``span_meta``) as Arrow tables."""
    attrs = [s.attributes for s in images]
    text = _text_columns(attrs)
    columns: dict[str, pa.Array] = {}
    inexact: dict[int, list[str]] = {}
    for column, key, coerce, arrow_type, allowed in _IMAGE_PLAN:
        if text is not None and column in text:
            columns[column] = text[column]
            continue
        array, bad = _typed([a.get(key) for a in attrs], arrow_type, allowed, coerce)
        columns[column] = array
        for i in bad:
            inexact.setdefault(i, []).append(key)
    columns["ts"] = _microseconds([s.start_ns for s in images]).cast(pa.timestamp("us"))
    columns["end_ts"] = _microseconds([s.end_ns for s in images]).cast(pa.timestamp("us"))
    columns["trace_id"] = pa.array([s.trace_id for s in images], pa.string())
    columns["span_id"] = pa.array([s.span_id for s in images], pa.string())
    columns["request_span_id"] = pa.array([s.parent_span_id for s in images], pa.string())
    meta_ids, metas = _span_meta(images)
    columns["span_meta"] = pa.array(meta_ids, pa.int64())
    columns["extra_attributes"] = pa.array(_extra(attrs, columns, inexact), pa.string())
    return pa.table(columns), metas


def _extra(
    attrs: list[dict[str, Any]], columns: dict[str, pa.Array], inexact: dict[int, list[str]]
) -> list[str | None]:
    """Per span, the attributes its typed columns do not hold exactly, as JSON (or None).

    A span needs a look when it has a key no column holds (or a key whose value
    is None), or a value coerced. A stored (non-null) typed value always comes
    from a key of the span, so when the batch's stored values add up to its
    keys, no span has an unmapped key and only the coerced ones are looked at.
    """
    extra: list[str | None] = [None] * len(attrs)
    stored = sum(len(columns[column]) - columns[column].null_count for column, *_ in _IMAGE_PLAN)
    if stored == sum(map(len, attrs)):
        suspects: Iterable[int] = sorted(inexact)
    else:
        suspects = range(len(attrs))
    for i in suspects:
        a = attrs[i]
        if not _MAPPED.issuperset(a) or i in inexact:
            keep = set(inexact.get(i, ()))
            kept = {k: v for k, v in a.items() if k not in _MAPPED or k in keep}
            extra[i] = to_json(kept) if kept else None
    return extra


def _meta_id(fields: tuple[Any, ...]) -> int:
    """Stable positive 63-bit id of one combination of span-level fields."""
    digest = hashlib.blake2b(to_json(fields).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def _span_meta(images: list[SpanRecord]) -> tuple[list[int], pa.Table]:
    """Per span, the id of its span-level fields; and those fields once per id (``span_meta``)."""
    resources: dict[int, tuple[str | None, str | None]] = {}
    ids: dict[tuple[Any, ...], int] = {}
    rows: list[tuple[Any, ...]] = []
    out: list[int] = []
    for s in images:
        key = id(s.resource)
        resource = resources.get(key)
        if resource is None:
            resource = resources[key] = (
                as_str(s.resource.get("service.name")),
                to_json(s.resource) if s.resource else None,
            )
        fields = (
            s.kind,
            s.status_code,
            s.status_message or None,
            resource[0],
            to_json(s.events) if s.events else None,
            resource[1],
        )  # in SPAN_META_COLUMNS order
        meta = ids.get(fields)
        if meta is None:
            meta = ids[fields] = _meta_id(fields)
            rows.append((meta, *fields))
        out.append(meta)
    columns = list(zip(*rows, strict=True))
    table = pa.table(
        {
            name: pa.array(columns[j], _ARROW[sql_type])
            for j, (name, sql_type) in enumerate(SPAN_META_COLUMNS)
        }
    )
    return out, table


def spans_to_batch(spans: Iterable[SpanRecord]) -> Batch:
    """Spans → what ``collector.store.write_batch`` stores (see module docstring)."""
    spans = spans if isinstance(spans, list) else list(spans)
    images = [s for s in spans if s.name == "image"]
    batch: Batch = {}
    if images:
        batch["image_spans"], batch["span_meta"] = image_table(images)
    memo: dict[int, str | None] = {}
    other = [span_row(s, memo) for s in spans if s.name != "image"]
    if other:
        batch["spans"] = other
    requests = [
        request_row(s) for s in spans if s.attributes.get("gen_ai.operation.name") == "chat"
    ]
    if requests:
        batch["request_spans"] = requests
    return batch


def merge_batches(batches: Iterable[Batch]) -> Batch:
    """Several batches → one (Arrow tables concatenated, row lists joined)."""
    merged: Batch = {}
    for batch in batches:
        for table, part in batch.items():
            if table not in merged:
                merged[table] = part if isinstance(part, pa.Table) else list(part)
            elif isinstance(part, pa.Table):
                merged[table] = pa.concat_tables([merged[table], part])
            else:
                merged[table].extend(part)
    return merged


def batch_size(batch: Batch) -> int:
    """Spans in a batch (image spans plus the other spans)."""
    images = batch.get("image_spans")
    return (images.num_rows if images is not None else 0) + len(batch.get("spans", ()))
