"""What ``aperture guardrails report`` asks the store: guardrail verdicts over a period.

Verdicts are ``image.guardrail`` span events (:mod:`collector.semconv`): on the request span
for inline detectors, on a ``guardrail shadow`` span for shadow-mode ones; both spans carry the
team. They live in the ``spans`` table's ``events`` JSON, so no migration is needed: the rows
are read by time and team in SQL and the events counted here.

Example::

    with open_store("aperture.duckdb", read_only=True) as conn:
        rows = guardrail_report(conn, since=datetime(2026, 12, 1))
        rows[0]   # {"detector": "pii", "team": "ops", "action": "block", "mode": "inline", ...}
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from datetime import datetime
from typing import Any

import duckdb

from collector import semconv as sc

_SQL = """
SELECT json_extract_string(attributes, '$."aperture.team"') AS team, events::VARCHAR AS events
FROM spans
WHERE events IS NOT NULL
  AND (name LIKE 'chat%' OR name = $shadow)
  AND ($since IS NULL OR start_ts >= $since)
"""

_KEYS = ("detector", "team", "action", "mode")


def guardrail_report(conn: duckdb.DuckDBPyConnection, since: datetime | None = None) -> list[dict[str, Any]]:
    """Verdict counts (pass, fire, error) and latency p50/p95 per detector, team, action and mode."""
    rows = conn.execute(_SQL, {"shadow": sc.GUARDRAIL_SHADOW_SPAN_NAME, "since": since}).fetchall()
    return summarise((team or "", events) for team, events in rows)


def summarise(rows: Any) -> list[dict[str, Any]]:
    """Group (team, events JSON) rows' guardrail events; pure, so it is tested without a store."""
    groups: dict[tuple[str, ...], dict[str, Any]] = defaultdict(lambda: {"pass": 0, "fire": 0, "error": 0, "latency": []})
    for team, events in rows:
        for event in json.loads(events):
            if event.get("name") != sc.IMAGE_GUARDRAIL_EVENT:
                continue
            attrs = event.get("attributes", {})
            key = (str(attrs.get(sc.IMAGE_GUARDRAIL_DETECTOR, "")), team, str(attrs.get(sc.IMAGE_GUARDRAIL_ACTION, "")),
                   str(attrs.get(sc.IMAGE_GUARDRAIL_MODE, "inline")))
            group = groups[key]
            verdict = str(attrs.get(sc.IMAGE_GUARDRAIL_VERDICT, ""))
            if verdict in ("pass", "fire", "error"):
                group[verdict] += 1
            group["latency"].append(float(attrs.get(sc.IMAGE_GUARDRAIL_LATENCY_MS, 0.0)))
    return [_row(key, group) for key, group in sorted(groups.items())]


def _row(key: tuple[str, ...], group: dict[str, Any]) -> dict[str, Any]:
    latency = sorted(group["latency"])
    return {
        **dict(zip(_KEYS, key, strict=True)),
        "checked": len(latency), "fired": group["fire"], "passed": group["pass"], "errors": group["error"],
        "p50_ms": round(_quantile(latency, 0.5), 1), "p95_ms": round(_quantile(latency, 0.95), 1),
    }


def _quantile(values: list[float], q: float) -> float:
    """Nearest-rank quantile of sorted ``values`` (0 when empty)."""
    if not values:
        return 0.0
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]
