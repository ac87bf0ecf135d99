"""The guardrail report's grouping of span events (pure; the store path is tested end to end)."""

from __future__ import annotations

import json

from collector import semconv as sc
from collector.queries.guardrails import summarise


def event(detector: str, verdict: str, action: str, latency: float, mode: str = "inline") -> dict[str, object]:
    return {"name": sc.IMAGE_GUARDRAIL_EVENT, "attributes": {
        sc.IMAGE_GUARDRAIL_DETECTOR: detector, sc.IMAGE_GUARDRAIL_VERDICT: verdict,
        sc.IMAGE_GUARDRAIL_ACTION: action, sc.IMAGE_GUARDRAIL_LATENCY_MS: latency, sc.IMAGE_GUARDRAIL_MODE: mode}}


def test_summarise_groups_by_detector_team_action_and_mode() -> None:
    rows = [
        ("ops", json.dumps([event("pii", "fire", "block", 10.0), event("injection", "pass", "block", 2.0),
                            {"name": "other", "attributes": {}}])),
        ("ops", json.dumps([event("pii", "pass", "block", 30.0)])),
        ("web", json.dumps([event("pii", "error", "shadow", 5.0, "shadow")])),
    ]
    report = {(r["detector"], r["team"], r["action"], r["mode"]): r for r in summarise(rows)}
    assert set(report) == {("pii", "ops", "block", "inline"), ("injection", "ops", "block", "inline"),
                           ("pii", "web", "shadow", "shadow")}
    pii = report[("pii", "ops", "block", "inline")]
    assert (pii["checked"], pii["fired"], pii["passed"], pii["errors"]) == (2, 1, 1, 0)
    assert (pii["p50_ms"], pii["p95_ms"]) == (10.0, 30.0)
    assert report[("pii", "web", "shadow", "shadow")]["errors"] == 1


def test_summarise_of_nothing_is_empty() -> None:
    assert summarise([]) == []
