"""The receiver's body decoding (pure): content encodings, caps, malformed bodies."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector.otlp import OtlpDecodeError, to_any_value
from collector.receiver import JSON, PROTOBUF, BodyTooLarge, decode_body, inflate


def request_bytes(n: int) -> bytes:
    request = ExportTraceServiceRequest()
    spans = request.resource_spans.add().scope_spans.add().spans
    for i in range(n):
        span = spans.add(trace_id=b"\x01" * 16, span_id=i.to_bytes(8, "big"), name="image")
        span.attributes.add(key="image.width", value=to_any_value(100 + i))
    return request.SerializeToString()


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("", lambda b: b),
        ("identity", lambda b: b),
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
    ],
)
def test_encodings_decode_to_rows(encoding: str, encode: object) -> None:
    body = request_bytes(3)
    rows, n, raw = decode_body(encode(body), PROTOBUF, encoding, 1 << 20)  # type: ignore[operator]
    assert n == 3 and raw == body
    assert rows["image_spans"]["width"].to_pylist() == [100, 101, 102]


def test_inflate_caps_output_and_spots_truncation() -> None:
    payload = b"x" * 10_000
    assert inflate(gzip.compress(payload), "gzip", 10_000) == payload
    with pytest.raises(BodyTooLarge):
        inflate(gzip.compress(payload), "gzip", 9_999)
    with pytest.raises(OtlpDecodeError, match="truncated"):
        inflate(gzip.compress(payload)[:-8], "gzip", 1 << 20)
    with pytest.raises(OtlpDecodeError):
        inflate(b"plain text", "deflate", 1 << 20)


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe not utf-8",
        b"[1, 2",
        b'{"resourceSpans": 5}',
        # deep nesting that json.loads accepts but a recursive decoder must not crash on
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"'
        + b"a" * 32
        + b'","spanId":"'
        + b"b" * 16
        + b'","attributes":[{"key":"k","value":'
        + b'{"arrayValue":{"values":[' * 600
        + b"{}"
        + b"]}}" * 600
        + b"}]}]}]}]}",
    ],
)
def test_malformed_json_bodies(body: bytes) -> None:
    with pytest.raises(OtlpDecodeError):
        decode_body(body, JSON, "", 1 << 20)


def test_json_body_round_trip() -> None:
    body = json.dumps(
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {"spans": [{"traceId": "a" * 32, "spanId": "b" * 16, "name": "image"}]}
                    ]
                }
            ]
        }
    ).encode()
    rows, n, _ = decode_body(body, JSON, "", 1 << 20)
    assert n == 1 and rows["image_spans"]["trace_id"].to_pylist() == ["a" * 32]
