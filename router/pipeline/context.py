"""One request's state as it moves through the pipeline: every stage reads and extends it.

A :class:`RequestContext` starts with what the client sent (body, headers, a request id and the
start time) and gains a field per stage: the principal (admit), the policy snapshot and hints
(admit), the intake images and features (intake), the route decision (route), the guardrail verdicts and any redacted images (guard), priced images,
the estimate and the budget reservation (price), the cache decision and any hit (cache), attempts and the upstream result (send), and
the bill (bill). Telemetry is written from the finished context in one place
(:mod:`router.telemetry`), so a stage never touches a span.

Fields a stage needs from an earlier one are read through the ``need_*`` accessors, which say
which stage was skipped instead of failing later on ``None``.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span

from router.budgets import Reservation
from router.cache.policy import CacheDecision, CachedResponse
from router.fallback import AttemptRecord
from router.guardrails.stage import DetectorVerdict
from router.images.intake import IntakeImage
from router.images.prepare import PreparedImage
from router.keys import Principal
from router.policy import PolicySnapshot, RouteDecision
from router.providers.base import ChatResult
from router.rules import RequestFeatures, Target
from router.streaming import ChunkStream

#: A request body after admission: a JSON object (``messages`` a non-empty list of objects).
JSONObject = dict[str, Any]


@dataclass(slots=True)
class GatewayResponse:
    """What the gateway answers: headers and either a JSON body or an SSE byte stream."""

    headers: dict[str, str]
    body: JSONObject | None = None
    stream: AsyncIterator[bytes] | None = None


@dataclass(frozen=True, slots=True)
class Hints:
    """What the client told us about the request beyond the OpenAI body (headers or metadata)."""

    task: str | None = None
    reference_id: str | None = None
    replay: bool = False
    #: Sent by the gateway itself (a canary request re-sent on the active version), never by a
    #: client: a client cannot set it, so it cannot dodge limits or budgets with it.
    shadow: bool = False


@dataclass(frozen=True, slots=True)
class PricedImage:
    """One image as prepared for one target, with its estimate at the target's and at low detail."""

    prepared: PreparedImage
    detail: str
    tokens: int
    tokens_low: int


@dataclass(frozen=True, slots=True)
class Bill:
    """What the request cost on the route that answered.

    ``estimated_only`` marks a stream cut before its usage arrived: the estimate stands in for
    the bill (providers.md §1.8) and ``image_shares`` are the estimates.
    """

    target: Target
    image_shares: list[int]
    input_tokens: int = 0
    output_tokens: int = 0
    billed_usd: float = 0.0
    prompt_cost_usd: float = 0.0
    finish_reason: str | None = None
    answer: str = ""
    response_model: str | None = None
    estimated_only: bool = False


def new_request_id() -> str:
    """``req_`` + a random version-4 UUID in hex. The bits come from :mod:`random` (reseeded in
    every forked worker), not ``os.urandom``: the id names a request and guards nothing, and on
    this sandboxed machine the ``getrandom`` call behind ``uuid.uuid4`` cost 0.3-0.6 ms of the
    request under load (cProfile of ``Gateway.chat``)."""
    return "req_" + uuid.UUID(int=random.getrandbits(128), version=4).hex


class StageOrderError(RuntimeError):
    """A stage ran before the stage that fills what it reads (a composition bug, never a client's)."""


@dataclass(slots=True)
class RequestContext:
    """Everything known about one request so far; see the module docstring for who fills what."""

    raw_body: object
    headers: Mapping[str, str]
    request_id: str = field(default_factory=lambda: new_request_id())
    started: float = field(default_factory=time.perf_counter)
    span: Span | None = None
    # admit
    principal: Principal | None = None
    body: JSONObject = field(default_factory=dict)
    requested_model: str = ""
    hints: Hints = field(default_factory=Hints)
    snapshot: PolicySnapshot | None = None
    # intake
    images: list[IntakeImage] = field(default_factory=list)
    text_heights: list[float | None] = field(default_factory=list)
    text_tokens: int = 0
    features: RequestFeatures | None = None
    # route
    decision: RouteDecision | None = None
    # guard
    guardrail_verdicts: list[DetectorVerdict] = field(default_factory=list)
    guardrail_header: str | None = None
    guardrail_original_sha256: dict[int, str] = field(default_factory=dict)  # image index → sha before redaction
    # price
    priced: dict[str, list[PricedImage]] = field(default_factory=dict)
    estimate_usd: float | None = None
    reservation: Reservation | None = None
    # cache
    cache_decision: CacheDecision | None = None
    cache_key: str | None = None
    cache_hit: CachedResponse | None = None
    # send
    attempts: list[AttemptRecord[Target]] | None = None
    target: Target | None = None
    result: ChatResult | None = None
    upstream_stream: ChunkStream | None = None
    # bill
    bill: Bill | None = None

    @property
    def stream(self) -> bool:
        """The client asked for SSE (read from the raw body, so it is known before admission)."""
        return isinstance(self.raw_body, Mapping) and bool(self.raw_body.get("stream"))

    @property
    def arm(self) -> str:
        """The ruleset arm that routed the request ("" before routing)."""
        return self.decision.arm if self.decision is not None else ""

    @property
    def routed_model(self) -> str:
        return self.decision.target.model if self.decision is not None else ""

    def need_principal(self) -> Principal:
        if self.principal is None:
            raise StageOrderError("no principal: the admit stage has not run")
        return self.principal

    def need_snapshot(self) -> PolicySnapshot:
        if self.snapshot is None:
            raise StageOrderError("no policy snapshot: the admit stage has not run")
        return self.snapshot

    def need_features(self) -> RequestFeatures:
        if self.features is None:
            raise StageOrderError("no features: the intake stage has not run")
        return self.features

    def need_decision(self) -> RouteDecision:
        if self.decision is None:
            raise StageOrderError("no route decision: the route stage has not run")
        return self.decision

    def need_target(self) -> Target:
        if self.target is None:
            raise StageOrderError("no answering target: the send stage has not run")
        return self.target

    def estimate(self) -> float:
        """The estimated cost in USD (0 before the price stage)."""
        return self.estimate_usd or 0.0
