"""OTLP decoders: protobuf, OTLP/JSON and SDK spans all agree (hypothesis round trips)."""

from __future__ import annotations

import base64
import math
import pickle
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from collector.otlp import (
    OtlpDecodeError,
    decode_protobuf,
    from_otlp_json,
    from_otlp_proto,
    to_any_value,
)
from collector.sdkspans import compact_spans, from_readable_span, records_from_compact

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=16)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
attributes = st.dictionaries(st.text(max_size=12), values, max_size=8)


def plain(value: Any) -> Any:
    """What a decoder must give back for ``value``: bytes become hex."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


def kvs(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=to_any_value(v)) for k, v in attrs.items()]


def build_request(
    attrs: dict[str, Any], trace_id: bytes, span_id: bytes, start: int, parent: bytes = b""
) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(kvs({"service.name": "svc"}))
    ss = rs.scope_spans.add()
    ss.scope.name = "scope"
    span = ss.spans.add(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name="image",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start,
        end_time_unix_nano=start + 1,
        status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
    )
    span.attributes.extend(kvs(attrs))
    event = span.events.add(name="retry", time_unix_nano=start)
    event.attributes.extend(kvs(attrs))
    return request


@settings(max_examples=60, deadline=None)
@given(
    attrs=attributes,
    trace_id=st.binary(min_size=16, max_size=16),
    span_id=st.binary(min_size=8, max_size=8),
    start=st.integers(min_value=0, max_value=2**64 - 2),
)
def test_proto_and_json_round_trip(
    attrs: dict[str, Any], trace_id: bytes, span_id: bytes, start: int
) -> None:
    request = build_request(attrs, trace_id, span_id, start, parent=b"\x01" * 8)
    from_proto = decode_protobuf(request.SerializeToString())
    from_json = from_otlp_json(MessageToDict(request))  # base64 ids, int64 as strings
    for records in (from_otlp_proto(request), from_proto, from_json):
        (span,) = records
        assert span.attributes == plain(attrs)
        assert span.events[0]["attributes"] == plain(attrs)
        assert (span.trace_id, span.span_id) == (trace_id.hex(), span_id.hex())
        assert span.parent_span_id == "01" * 8
        assert (span.start_ns, span.end_ns) == (start, start + 1)
        assert (span.kind, span.status_code, span.status_message) == ("CLIENT", "ERROR", "boom")
        assert span.resource == {"service.name": "svc"} and span.scope_name == "scope"


def test_json_hex_ids_numbers_and_enum_names() -> None:
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "g"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "s"},
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "EEE19B7EC3C1B174",
                                "parentSpanId": "",
                                "name": "image",
                                "kind": "SPAN_KIND_SERVER",
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": 1544712661000000000,
                                "status": {"code": "STATUS_CODE_OK"},
                                "attributes": [
                                    {"key": "image.width", "value": {"intValue": "1024"}},
                                    {"key": "x", "value": {"doubleValue": "Infinity"}},
                                    {
                                        "key": "b",
                                        "value": {"bytesValue": base64.b64encode(b"\xff").decode()},
                                    },
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    (span,) = from_otlp_json(body)
    assert span.trace_id == "5b8efff798038103d269b633813fc60c" and span.parent_span_id is None
    assert (span.kind, span.status_code, span.start_ns) == ("SERVER", "OK", 1544712660000000000)
    assert span.attributes["image.width"] == 1024 and math.isinf(span.attributes["x"])
    assert span.attributes["b"] == "ff"


def test_url_safe_base64_ids() -> None:
    raw = bytes(range(250, 256)) + bytes(range(10))
    span = {"traceId": base64.urlsafe_b64encode(raw).decode().rstrip("="), "spanId": "a" * 16}
    (record,) = from_otlp_json({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]})
    assert record.trace_id == raw.hex()


def test_wrong_types_never_reach_the_store() -> None:
    span = {"traceId": "a" * 32, "spanId": "a" * 16}
    for bad in (
        {**span, "status": {"message": 5}},
        {**span, "events": [{"name": ["x"]}]},
        {**span, "name": 3},
    ):
        with pytest.raises(OtlpDecodeError):
            from_otlp_json({"resourceSpans": [{"scopeSpans": [{"spans": [bad]}]}]})
    with pytest.raises(OtlpDecodeError):
        from_otlp_json(
            {"resourceSpans": [{"scopeSpans": [{"scope": {"name": 1}, "spans": [span]}]}]}
        )


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"resourceSpans": {}},
        {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "00", "spanId": "a" * 16}]}]}]},
        {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "a" * 32}]}]}]},
        {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "a" * 32, "spanId": "AAAA"}]}]}]},
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": "a" * 32,
                                    "spanId": "a" * 16,
                                    "startTimeUnixNano": "soon",
                                }
                            ]
                        }
                    ]
                }
            ]
        },
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {"traceId": "a" * 32, "spanId": "a" * 16, "kind": "SPAN_KIND_NOPE"}
                            ]
                        }
                    ]
                }
            ]
        },
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": "a" * 32,
                                    "spanId": "a" * 16,
                                    "attributes": [{"key": "k", "value": {"weird": 1}}],
                                }
                            ]
                        }
                    ]
                }
            ]
        },
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": "a" * 32,
                                    "spanId": "a" * 16,
                                    "attributes": [{"key": 5, "value": {"intValue": 1}}],
                                }
                            ]
                        }
                    ]
                }
            ]
        },
    ],
)
def test_malformed_json_is_refused(body: Any) -> None:
    with pytest.raises(OtlpDecodeError):
        from_otlp_json(body)


@pytest.mark.parametrize(
    "body",
    [b"\xff\xff\xff\xff", b"\x0a\x10\x0a\x05", b"\x0a\x05\x12\x03\x0a\x01"],
)
def test_malformed_protobuf_is_refused(body: bytes) -> None:
    with pytest.raises(OtlpDecodeError):
        decode_protobuf(body)


def test_wrong_length_ids_in_protobuf_are_refused() -> None:
    request = build_request({}, b"\x01" * 15, b"\x02" * 8, 1)
    with pytest.raises(OtlpDecodeError, match="trace_id"):
        from_otlp_proto(request)


def test_sdk_span_and_its_official_encoding_agree() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("chat", kind=SpanKind.CLIENT) as parent:
        parent.set_attribute("gen_ai.operation.name", "chat")
        with tracer.start_as_current_span("image") as child:
            child.set_attributes(
                {"image.width": 4032, "tags": ["a", "b"], "ratio": 1.5, "ok": True}
            )
            child.add_event("resized", {"to": (1024, 768)})
            child.set_status(StatusCode.ERROR, "too big")
    spans = memory.get_finished_spans()
    direct = [from_readable_span(s) for s in spans]
    assert direct == decode_protobuf(encode_spans(spans).SerializeToString())
    image = direct[0]
    assert image.parent_span_id == direct[1].span_id
    assert image.attributes == {"image.width": 4032, "tags": ["a", "b"], "ratio": 1.5, "ok": True}
    assert image.events[0]["attributes"] == {"to": [1024, 768]}
    assert (image.status_code, image.status_message) == ("ERROR", "too big")
    assert direct[1].kind == "CLIENT"
    # the writer process's route: plain values, pickled across, finished there
    batch = pickle.loads(pickle.dumps(compact_spans(spans)))
    assert records_from_compact(batch) == direct
    assert len(batch[0]) == 1  # the process's one resource, sent once per batch
