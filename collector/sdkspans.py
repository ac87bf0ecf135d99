"""The OTel SDK's finished spans → :class:`SpanRecord`, whole or in two steps.

``from_readable_span`` converts one span. The embedded exporter converts a batch in two steps:
``compact_spans`` reads the spans into plain values on its thread (cheap, it runs beside the
gateway's requests) and ``records_from_compact`` finishes them, in the converter process
(``collector.converter``) or on that thread. All attribute kinds map to plain Python as in
``collector.otlp``: arrays → lists, mappings → dicts, bytes → hex text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

from collector.otlp import OtlpDecodeError
from collector.record import SpanRecord

_SCALARS = frozenset({str, int, float, bool})


def _plain(value: Any) -> Any:
    if type(value) in _SCALARS:
        return value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _plain_attrs(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    # The exporter converts every span of the gateway on a thread beside its requests, holding
    # the GIL: scalars (nearly every value) are taken as they are, without the checks below.
    if not attributes:
        return {}
    out = dict(attributes)
    for k, v in out.items():
        if type(v) not in _SCALARS:
            out[k] = _plain(v)
    return out


_last_resource: tuple[Resource | None, dict[str, Any]] = (None, {})


def _resource_attrs(resource: Resource) -> dict[str, Any]:
    """Every span of a process shares one resource: convert it once, and hand every record the
    same dict (records never modify it), so the row builders' per-batch memo, keyed on the
    dict's identity, encodes it once per batch instead of once per span."""
    global _last_resource
    seen, attrs = _last_resource
    if seen is not resource:
        attrs = _plain_attrs(resource.attributes)
        _last_resource = (resource, attrs)
    return attrs


#: One SDK span as plain values: trace id, span id, parent span id (ints or None), name, kind,
#: start and end (ns), status code and message, attributes, events as (name, ns, attributes),
#: the index of its resource in the batch, the scope's name.
CompactSpan = tuple[
    int, int, int | None, str, str, int, int, str, str | None, dict[str, Any],
    list[tuple[str, int, dict[str, Any]]] | None, int, str | None,
]
#: The resources' attributes (usually one: the process's) and the spans that point into them.
CompactBatch = tuple[list[dict[str, Any]], list[CompactSpan]]


def _attribute_dict(attributes: Any) -> dict[str, Any]:
    # ``BoundedAttributes`` keeps a plain dict; copying through its Mapping interface would call
    # a Python ``__getitem__`` per key (7x the cost of this whole function on a gateway's spans).
    # An ended span's attributes no longer change, so the dict may be shared until pickled.
    inner = getattr(attributes, "_dict", None)
    if type(inner) is dict:
        return inner
    return dict(attributes) if attributes else {}


def compact_spans(spans: Sequence[ReadableSpan]) -> CompactBatch:
    """SDK spans → plain tuples that pickle cheaply; ``records_from_compact`` finishes the job.

    Why two steps: the exporter runs beside the gateway's requests and holds the GIL while it
    works. This step only reads the span (0.5 µs a span); the string formatting and attribute
    checks of the second step (≈ 7 µs a span) can then run in another process.
    """
    resources: list[dict[str, Any]] = []
    seen: dict[int, int] = {}
    out: list[CompactSpan] = []
    for span in spans:
        ctx = span.get_span_context()
        if ctx is None:
            raise OtlpDecodeError("span without a context")
        resource = span.resource
        index = seen.get(id(resource))
        if index is None:
            index = seen[id(resource)] = len(resources)
            resources.append(_resource_attrs(resource) if resource else {})
        parent, status, scope = span.parent, span.status, span.instrumentation_scope
        events = span.events
        out.append((
            ctx.trace_id, ctx.span_id, parent.span_id if parent else None, span.name, span.kind.name,
            span.start_time or 0, span.end_time or 0, status.status_code.name, status.description,
            _attribute_dict(getattr(span, "_attributes", None) or span.attributes),
            [(e.name, e.timestamp, _attribute_dict(e.attributes)) for e in events] if events else None,
            index, scope.name if scope else None,
        ))
    return resources, out


def records_from_compact(batch: CompactBatch) -> list[SpanRecord]:
    """The second step of ``compact_spans``: compact spans → ``SpanRecord``s. Spans that share a
    resource share its dict, so the row builders encode it once per batch."""
    resources, spans = batch
    return [
        SpanRecord(
            trace_id=format(trace_id, "032x"),
            span_id=format(span_id, "016x"),
            parent_span_id=format(parent_id, "016x") if parent_id is not None else None,
            name=name,
            kind=kind,
            start_ns=start_ns,
            end_ns=end_ns,
            status_code=status_code,
            status_message=status_message,
            attributes=_plain_attrs(attributes),
            events=[
                {"name": e_name, "time_unix_nano": e_ns, "attributes": _plain_attrs(e_attrs)}
                for e_name, e_ns, e_attrs in events or ()
            ],
            resource=resources[resource],
            scope_name=scope,
        )
        for (trace_id, span_id, parent_id, name, kind, start_ns, end_ns, status_code, status_message,
             attributes, events, resource, scope) in spans
    ]


def from_readable_span(span: ReadableSpan) -> SpanRecord:
    """An SDK span (as handed to a ``SpanExporter``) → ``SpanRecord``."""
    return records_from_compact(compact_spans([span]))[0]
