"""``SpanRecord``: one span, independent of where it came from.

The OTel SDK (``ReadableSpan``), OTLP protobuf and OTLP/JSON all decode into
this one shape, so one row function serves the in-process exporter and the
OTLP receiver alike. Attribute values are plain JSON-able Python: str, bool,
int, float, lists, dicts (OTLP kvlists), with bytes already turned into hex.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class SpanRecord:
    """A decoded span.

    Example::

        SpanRecord(trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331",
                   name="image", start_ns=1_700_000_000_000_000_000,
                   end_ns=1_700_000_000_002_000_000, attributes={"image.width": 1024})
    """

    trace_id: str
    span_id: str
    name: str
    start_ns: int
    end_ns: int
    parent_span_id: str | None = None
    kind: str = "INTERNAL"
    status_code: str = "UNSET"
    status_message: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    #: each event: {"name": str, "time_unix_nano": int, "attributes": dict}
    events: list[dict[str, Any]] = field(default_factory=list)
    resource: dict[str, Any] = field(default_factory=dict)
    scope_name: str | None = None


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# Built once: json.dumps with options would build a new encoder on every call (hot path).
_ENCODER = json.JSONEncoder(
    allow_nan=False, default=str, separators=(",", ":"), check_circular=False
)


def to_json(value: Any) -> str:
    """Strict JSON text for a JSON column (NaN/inf become strings, unknown objects str())."""
    try:
        return _ENCODER.encode(value)
    except ValueError:
        return _ENCODER.encode(_finite(value))
