"""OTEL_EXPORTER_OTLP_PROTOCOL picks the exporter Aperture builds."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

from aperture.wiring import otlp_protocol, otlp_span_exporter


def test_default_is_http_protobuf() -> None:
    assert otlp_protocol({}) == "http/protobuf"
    exporter = otlp_span_exporter({})
    try:
        assert isinstance(exporter, HttpExporter)
    finally:
        exporter.shutdown()


def test_grpc_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
    assert otlp_protocol(env) == "grpc"
    exporter = otlp_span_exporter(env)
    try:
        assert isinstance(exporter, GrpcExporter)
    finally:
        exporter.shutdown()


def test_traces_specific_variable_wins() -> None:
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}
    assert otlp_protocol(env) == "http/protobuf"


def test_unsupported_protocol_is_refused_in_one_line() -> None:
    with pytest.raises(ValueError, match="not supported") as info:
        otlp_protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
    assert "\n" not in str(info.value)
