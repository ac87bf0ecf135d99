"""Decoders from the three span sources into :class:`SpanRecord`.

- ``from_readable_span`` (in ``collector.sdkspans``): the OTel SDK's finished span;
- ``from_otlp_proto``: an ``ExportTraceServiceRequest`` (OTLP/HTTP protobuf);
- ``from_otlp_json``: the OTLP/JSON body as a dict. The spec says hex ids,
  but some clients send the protobuf-JSON mapping's base64; both are read.
  64-bit integers may arrive as strings, doubles as "NaN"/"Infinity".

All attribute kinds map to plain Python: arrays → lists, kvlists → dicts,
bytes → hex text. Malformed input raises :class:`OtlpDecodeError`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from collector.record import SpanRecord

_KINDS = ("UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")
_STATUS = ("UNSET", "OK", "ERROR")
_HEX = frozenset("0123456789abcdefABCDEF")


class OtlpDecodeError(ValueError):
    """The body is not a valid OTLP trace export."""


# ---------------------------------------------------------------- protobuf


def _any_proto(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_any_proto(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return _kv_proto(value.kvlist_value.values)
    if which == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, which)


def _kv_proto(items: Any) -> dict[str, Any]:
    return {kv.key: _any_proto(kv.value) for kv in items}


def _name(table: tuple[str, ...], index: int) -> str:
    return table[index] if 0 <= index < len(table) else str(index)


def _proto_id(raw: bytes, size: int, what: str) -> str:
    if len(raw) != size:
        raise OtlpDecodeError(f"{what} must be {size} bytes, got {len(raw)}")
    return raw.hex()


def from_otlp_proto(request: ExportTraceServiceRequest) -> list[SpanRecord]:
    """Every span of a decoded OTLP protobuf request."""
    out: list[SpanRecord] = []
    for resource_spans in request.resource_spans:
        resource = _kv_proto(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name or None
            for span in scope_spans.spans:
                out.append(
                    SpanRecord(
                        trace_id=_proto_id(span.trace_id, 16, "trace_id"),
                        span_id=_proto_id(span.span_id, 8, "span_id"),
                        parent_span_id=(
                            _proto_id(span.parent_span_id, 8, "parent_span_id")
                            if span.parent_span_id
                            else None
                        ),
                        name=span.name,
                        kind=_name(_KINDS, span.kind),
                        start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano,
                        status_code=_name(_STATUS, span.status.code),
                        status_message=span.status.message or None,
                        attributes=_kv_proto(span.attributes),
                        events=[
                            {
                                "name": e.name,
                                "time_unix_nano": e.time_unix_nano,
                                "attributes": _kv_proto(e.attributes),
                            }
                            for e in span.events
                        ],
                        resource=resource,
                        scope_name=scope,
                    )
                )
    return out


def decode_protobuf(body: bytes) -> list[SpanRecord]:
    """Raw ``application/x-protobuf`` body → spans."""
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise OtlpDecodeError(f"undecodable protobuf: {exc}") from exc
    return from_otlp_proto(request)


# ---------------------------------------------------------------- JSON


def _field(obj: Mapping[str, Any], camel: str, snake: str, default: Any = None) -> Any:
    if camel in obj:
        return obj[camel]
    return obj.get(snake, default)


def _json_int(value: Any, what: str) -> int:
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise OtlpDecodeError(f"{what}: expected an integer")
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise OtlpDecodeError(f"{what}: expected an integer, got {value!r}") from exc


def _json_id(value: Any, size: int, what: str) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise OtlpDecodeError(f"{what}: expected a string id")
    if len(value) == 2 * size and _HEX.issuperset(value):
        return value.lower()
    text = value.replace("-", "+").replace("_", "/")  # URL-safe alphabet too
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise OtlpDecodeError(f"{what}: neither hex nor base64: {value!r}") from exc
    if len(raw) != size:
        raise OtlpDecodeError(f"{what} must be {size} bytes, got {len(raw)}")
    return raw.hex()


def _json_double(value: Any) -> float:
    if isinstance(value, bool):
        raise OtlpDecodeError("doubleValue: expected a number")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise OtlpDecodeError(f"doubleValue: expected a number, got {value!r}") from exc


def _any_json(value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise OtlpDecodeError("attribute value must be an object")
    if not value:
        return None
    if "stringValue" in value or "string_value" in value:
        text = _field(value, "stringValue", "string_value")
        if not isinstance(text, str):
            raise OtlpDecodeError("stringValue must be a string")
        return text
    if "boolValue" in value or "bool_value" in value:
        flag = _field(value, "boolValue", "bool_value")
        if not isinstance(flag, bool):
            raise OtlpDecodeError("boolValue must be true or false")
        return flag
    if "intValue" in value or "int_value" in value:
        return _json_int(_field(value, "intValue", "int_value"), "intValue")
    if "doubleValue" in value or "double_value" in value:
        return _json_double(_field(value, "doubleValue", "double_value"))
    if "arrayValue" in value or "array_value" in value:
        array = _field(value, "arrayValue", "array_value") or {}
        return [_any_json(v) for v in _list(array.get("values"), "arrayValue.values")]
    if "kvlistValue" in value or "kvlist_value" in value:
        kvlist = _field(value, "kvlistValue", "kvlist_value") or {}
        return _kv_json(kvlist.get("values"))
    if "bytesValue" in value or "bytes_value" in value:
        text = _field(value, "bytesValue", "bytes_value")
        try:
            return base64.b64decode(text, validate=True).hex()
        except (binascii.Error, ValueError, TypeError) as exc:
            raise OtlpDecodeError("bytesValue must be base64") from exc
    raise OtlpDecodeError(f"unknown attribute value kind: {sorted(value)}")


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise OtlpDecodeError(f"{what} must be a list")
    return value


def _kv_json(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in _list(items, "attributes"):
        key = kv.get("key", "") if isinstance(kv, Mapping) else None  # proto3 JSON omits ""
        if not isinstance(key, str):
            raise OtlpDecodeError("attribute must be an object with a string key")
        out[key] = _any_json(kv.get("value") or {})
    return out


def _text(value: Any, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise OtlpDecodeError(f"{what} must be a string")
    return value


def _enum(value: Any, names: tuple[str, ...], prefix: str) -> str:
    if value is None:
        return names[0]
    if isinstance(value, str):
        name = value.removeprefix(prefix)
        if name in names:
            return name
        raise OtlpDecodeError(f"unknown enum value {value!r}")
    return _name(names, _json_int(value, prefix))


def _json_span(span: Any, resource: dict[str, Any], scope: str | None) -> SpanRecord:
    if not isinstance(span, Mapping):
        raise OtlpDecodeError("span must be an object")
    trace_id = _json_id(_field(span, "traceId", "trace_id"), 16, "traceId")
    span_id = _json_id(_field(span, "spanId", "span_id"), 8, "spanId")
    if trace_id is None or span_id is None:
        raise OtlpDecodeError("span without traceId/spanId")
    status = span.get("status") or {}
    name = span.get("name", "")
    if not isinstance(name, str) or not isinstance(status, Mapping):
        raise OtlpDecodeError("span name must be a string and status an object")
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=_json_id(_field(span, "parentSpanId", "parent_span_id"), 8, "parentSpanId"),
        name=name,
        kind=_enum(span.get("kind"), _KINDS, "SPAN_KIND_"),
        start_ns=_json_int(_field(span, "startTimeUnixNano", "start_time_unix_nano"), "start"),
        end_ns=_json_int(_field(span, "endTimeUnixNano", "end_time_unix_nano"), "end"),
        status_code=_enum(status.get("code"), _STATUS, "STATUS_CODE_"),
        status_message=_text(status.get("message"), "status.message") or None,
        attributes=_kv_json(span.get("attributes")),
        events=[
            {
                "name": _text(e.get("name"), "event name"),
                "time_unix_nano": _json_int(_field(e, "timeUnixNano", "time_unix_nano"), "event"),
                "attributes": _kv_json(e.get("attributes")),
            }
            for e in _list(span.get("events"), "events")
            if isinstance(e, Mapping)
        ],
        resource=resource,
        scope_name=scope,
    )


def from_otlp_json(body: Mapping[str, Any]) -> list[SpanRecord]:
    """Every span of an OTLP/JSON export request (already parsed with ``json.loads``)."""
    if not isinstance(body, Mapping):
        raise OtlpDecodeError("OTLP/JSON body must be an object")
    out: list[SpanRecord] = []
    for rs in _list(_field(body, "resourceSpans", "resource_spans"), "resourceSpans"):
        if not isinstance(rs, Mapping):
            raise OtlpDecodeError("resourceSpans entries must be objects")
        resource = _kv_json((rs.get("resource") or {}).get("attributes"))
        scopes = _field(rs, "scopeSpans", "scope_spans")
        if scopes is None:  # pre-1.0 clients
            scopes = rs.get("instrumentationLibrarySpans")
        for ss in _list(scopes, "scopeSpans"):
            if not isinstance(ss, Mapping):
                raise OtlpDecodeError("scopeSpans entries must be objects")
            scope_obj = ss.get("scope") or ss.get("instrumentationLibrary") or {}
            scope = _text(scope_obj.get("name"), "scope name") or None
            for span in _list(ss.get("spans"), "spans"):
                out.append(_json_span(span, resource, scope))
    return out


def to_any_value(value: Any) -> AnyValue:
    """Plain Python → ``AnyValue`` (for building requests: forwarding, tests, tools)."""
    if value is None:
        return AnyValue()
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, str):
        return AnyValue(string_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    if isinstance(value, Mapping):
        out = AnyValue()
        out.kvlist_value.values.extend(
            KeyValue(key=str(k), value=to_any_value(v)) for k, v in value.items()
        )
        return out
    if isinstance(value, list | tuple):
        out = AnyValue()
        out.array_value.values.extend(to_any_value(v) for v in value)
        return out
    return AnyValue(string_value=str(value))
