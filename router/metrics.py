"""Prometheus metrics of one gateway instance (its own registry, so tests can build many apps).

Names are part of the contract with ``deploy/grafana`` dashboards; keep them stable.

Under ``aperture serve --workers N`` every worker is its own process, and a scrape reaches only
one of them. ``serve`` then sets ``PROMETHEUS_MULTIPROC_DIR`` (before the workers start, since
prometheus-client reads it at import) and each worker's values live in files there;
:meth:`GatewayMetrics.render` sums every worker's files (prometheus-client's multiprocess mode),
so any worker answers for all. Gauges say how they combine: ``livesum`` or ``livemax``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.semconv.attributes import error_attributes
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# GenAI client metrics: the conventions' names with dots as underscores (Prometheus' spelling of
# OTel names), their attributes as labels, and the conventions' advised bucket boundaries.
GEN_AI_TOKEN_USAGE = gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE.replace(".", "_")
GEN_AI_OPERATION_DURATION = gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION.replace(".", "_")
GEN_AI_LABELS = tuple(
    key.replace(".", "_")
    for key in (gen_ai.GEN_AI_OPERATION_NAME, gen_ai.GEN_AI_PROVIDER_NAME, gen_ai.GEN_AI_REQUEST_MODEL, gen_ai.GEN_AI_RESPONSE_MODEL)
)
TOKEN_TYPE_LABEL = gen_ai.GEN_AI_TOKEN_TYPE.replace(".", "_")
ERROR_TYPE_LABEL = error_attributes.ERROR_TYPE.replace(".", "_")
TOKEN_BUCKETS = tuple(4.0**k for k in range(14))  # 1, 4, 16, ... 67108864
DURATION_BUCKETS = tuple(0.01 * 2**k for k in range(14))  # 0.01, 0.02, ... 81.92 s


def multiprocess_dir() -> str | None:
    """The directory prometheus-client's multiprocess mode uses, when this process is in it."""
    return os.environ.get(MULTIPROC_ENV) or None

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GatewayMetrics:
    """The gateway's metrics. ``multiproc_dir`` (default: :func:`multiprocess_dir`) turns on the
    sum over worker processes; it must be the directory prometheus-client was imported with."""

    def __init__(self, multiproc_dir: str | None = None) -> None:
        self.multiproc_dir = multiproc_dir or multiprocess_dir()
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "aperture_requests", "Chat requests answered, by HTTP status code, routed model and ruleset arm "
            "(active, canary, explore, explicit; empty when refused before routing).", ["code", "model", "arm"], registry=r)
        self.errors = Counter("aperture_errors", "Requests refused or failed, by error code.", ["code"], registry=r)
        self.upstream_latency = Histogram(
            "aperture_upstream_latency_seconds", "Latency of upstream attempts.", ["provider", "outcome"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.request_latency = Histogram(
            "aperture_request_latency_seconds", "End-to-end latency of chat requests.", ["stream"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.images = Counter("aperture_images", "Images seen, by routed model and detail.", ["model", "detail"], registry=r)
        self.tokens_estimated = Counter("aperture_image_tokens_estimated", "Image tokens estimated before forwarding.", ["model"], registry=r)
        self.tokens_billed = Counter("aperture_image_tokens_billed", "Image tokens billed (share of provider usage).", ["model"], registry=r)
        self.shadows = Counter("aperture_shadows", "Canary requests re-sent on the active version, by outcome.", ["outcome"], registry=r)
        self.shadow_cost = Counter("aperture_shadow_cost_usd", "Billed cost of shadows in USD.", registry=r)
        self.cost = Counter("aperture_cost_usd", "Billed cost in USD.", ["model", "team"], registry=r)
        self.upstream_attempts = Counter("aperture_upstream_attempts", "Upstream attempts, by provider and outcome.", ["provider", "outcome"], registry=r)
        self.ruleset_load_failures = Gauge("aperture_ruleset_load_failures", "Ruleset versions that failed to load (the old one stayed).",
                                           registry=r, multiprocess_mode="livemax")
        self.ruleset_active = Gauge("aperture_ruleset_active", "1 for the ruleset version serving each arm.", ["version", "arm"],
                                    registry=r, multiprocess_mode="livemax")
        self.spans_dropped = Gauge("aperture_spans_dropped", "Spans the exporters could not store or send.", registry=r,
                                   multiprocess_mode="livesum")
        self.state_fallbacks = Counter(
            "aperture_state_fallbacks", "State operations the shared store (Redis) failed, by operation and outcome "
            "(local: served by this process's limits; refused: 503 state_unavailable; lost: bookkeeping dropped).",
            ["operation", "outcome"], registry=r)
        self.gen_ai_token_usage = Histogram(
            GEN_AI_TOKEN_USAGE, "Tokens used per upstream call (gen_ai.client.token.usage), by token type (input, output).",
            [*GEN_AI_LABELS, TOKEN_TYPE_LABEL], buckets=TOKEN_BUCKETS, registry=r)
        self.gen_ai_operation_duration = Histogram(
            GEN_AI_OPERATION_DURATION, "Duration of upstream GenAI calls (gen_ai.client.operation.duration); "
            "error_type is empty on success.", [*GEN_AI_LABELS, ERROR_TYPE_LABEL], unit="seconds",
            buckets=DURATION_BUCKETS, registry=r)
        self.guardrail_verdicts = Counter(
            "aperture_guardrail_verdicts", "Image guardrail verdicts, by detector, verdict (pass, fire, error), "
            "action (shadow, flag, block, redact) and mode (inline, shadow).", ["detector", "verdict", "action", "mode"], registry=r)
        self.guardrail_latency = Histogram(
            "aperture_guardrail_latency_seconds", "Time one guardrail detector took over a request's images.", ["detector", "mode"],
            buckets=LATENCY_BUCKETS, registry=r)
        self._dropped_sources: list[Callable[[], int]] = []
        self._ruleset_labels: set[tuple[str, str]] = set()

    def add_dropped_source(self, source: Callable[[], int]) -> None:
        self._dropped_sources.append(source)

    def set_ruleset(self, arms: dict[str, str | None]) -> None:
        # Zero the old labels rather than clear(): in multiprocess mode a cleared child would keep
        # its last value in the worker's file.
        current = {(version, arm) for arm, version in arms.items() if version}
        for version, arm in self._ruleset_labels - current:
            self.ruleset_active.labels(version=version, arm=arm).set(0)
        for version, arm in current:
            self.ruleset_active.labels(version=version, arm=arm).set(1)
        self._ruleset_labels |= current

    def state_fallback(self, operation: str, outcome: str) -> None:
        """The hook :func:`router.state.build_state` calls when the shared store fails."""
        self.state_fallbacks.labels(operation=operation, outcome=outcome).inc()

    def render(self) -> bytes:
        self.spans_dropped.set(float(sum(f() for f in self._dropped_sources)))
        if self.multiproc_dir is None:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, path=self.multiproc_dir)
        return generate_latest(combined)

    def shadow(self, outcome: str, spent_usd: float) -> None:
        self.shadows.labels(outcome=outcome).inc()
        if spent_usd > 0:
            self.shadow_cost.inc(spent_usd)
