"""Scores as OTel GenAI evaluation events.

Each score becomes a short span ``evaluation {name}`` that carries one
``gen_ai.evaluation.result`` event and links to the evaluated request span, so a trace
backend shows the verdict next to the request it judges (the request span itself ended long
before the evaluation ran, so the result cannot be a child of it).
"""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry import context as otel_context
from opentelemetry.trace import Link, SpanContext, TraceFlags, TracerProvider

from evals.base import Score

EVENT_NAME = "gen_ai.evaluation.result"


def score_label(score: Score) -> str:
    if score.status == "not_evaluable":
        return "not_evaluable"
    return "pass" if score.passed else "fail"


def event_attributes(score: Score) -> dict[str, str | float]:
    """Attributes of the ``gen_ai.evaluation.result`` event for one score."""
    attrs: dict[str, str | float] = {
        "gen_ai.evaluation.name": score.name,
        "gen_ai.evaluation.score.label": score_label(score),
        "gen_ai.evaluation.explanation": score.explanation,
        "aperture.evaluation.version": score.evaluator_version,
    }
    if score.value is not None:
        attrs["gen_ai.evaluation.score.value"] = float(score.value)
    return attrs


def _link(trace_id: str, span_id: str) -> Link | None:
    try:
        ctx = SpanContext(
            trace_id=int(trace_id, 16),
            span_id=int(span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
    except (TypeError, ValueError):
        return None
    return Link(ctx) if ctx.is_valid else None


def emit_scores(provider: TracerProvider, results: Iterable[tuple[str, str, Score]]) -> int:
    """Emit one evaluation span per ``(trace_id, span_id, score)``; returns how many."""
    tracer = provider.get_tracer("aperture.evals")
    root = otel_context.Context()  # a fresh root: evaluation spans are not children of the run
    n = 0
    for trace_id, span_id, score in results:
        link = _link(trace_id, span_id)
        with tracer.start_as_current_span(
            f"evaluation {score.name}", context=root, links=[link] if link else None
        ) as span:
            span.set_attribute("gen_ai.evaluation.name", score.name)
            span.add_event(EVENT_NAME, attributes=event_attributes(score))
        n += 1
    return n
