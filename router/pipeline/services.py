"""What every stage may use besides the request itself: the gateway's shared dependencies.

One :class:`Services` per gateway process, shared by all requests. Stages read the limiter,
the budget ledger and the breakers through it at request time, so a shared-state backend
(Redis, say) replaces them here without a stage changing, and a test may swap one between
requests.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from router.blobs import BlobStore
from router.breaker import BreakerRegistry, CircuitBreaker, upstream_key
from router.budgets import BudgetLedger
from router.config import AppConfig, ModelSpec, ProviderConfig
from router.images.fetch import ImageFetcher
from router.images.intake import ImageLimits
from router.limits import RateLimiter
from router.policy import PolicySnapshot, explore_routes
from router.providers import ADAPTERS
from router.providers.base import ProviderSpec
from router.retry import RetryPolicy
from router.rules import Target
from router.upstream import UpstreamClient

if TYPE_CHECKING:  # router.telemetry reads the context, which the stages import from here
    from router.telemetry import RequestTelemetry

#: Returns the policy a request is routed by; called once per request.
SnapshotSource = Callable[[], PolicySnapshot]


class Services:
    """The dependencies of the request pipeline (see the module docstring)."""

    def __init__(
        self,
        config: AppConfig,
        *,
        client: UpstreamClient,
        fetcher: ImageFetcher,
        snapshot: SnapshotSource,
        telemetry: RequestTelemetry,
        limiter: RateLimiter | None = None,
        ledger: BudgetLedger | None = None,
        breakers: BreakerRegistry | None = None,
        blobs: BlobStore | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.fetcher = fetcher
        self.snapshot_source = snapshot
        self.telemetry = telemetry
        self.limiter = limiter or RateLimiter()
        self.ledger = ledger or BudgetLedger.from_config(config)
        self.breakers = breakers or BreakerRegistry()
        self.blobs = blobs
        self.rng = rng or random.Random()
        self.limits = ImageLimits(
            max_image_bytes=config.images.max_image_bytes,
            max_request_image_bytes=config.images.max_request_image_bytes,
            max_images=config.images.max_images,
            max_pixels=config.images.max_pixels,
        )
        explore_models = config.routing.explore_models or list(config.models)
        self.explore_set = explore_routes(config.models, explore_models) if config.routing.explore_fraction else []
        self.specs: dict[str, ProviderSpec] = {
            name: ADAPTERS[p.kind].spec.with_base_url(p.base_url) for name, p in config.providers.items()
        }

    def policy_snapshot(self) -> PolicySnapshot:
        """The policy a request starting now would be routed by."""
        return self.snapshot_source()

    def model(self, target: Target) -> ModelSpec:
        return self.config.models[target.model]

    def provider(self, target: Target) -> ProviderConfig:
        return self.config.providers[self.config.models[target.model].provider]

    def retry_policy(self, target: Target) -> RetryPolicy:
        return RetryPolicy.from_provider(self.provider(target))

    def breaker(self, target: Target) -> CircuitBreaker:
        spec = self.model(target)
        provider = self.provider(target)
        return self.breakers.get(
            upstream_key(spec.provider, spec.upstream),
            failure_threshold=provider.cooldown_failures, cooldown_s=provider.cooldown_s,
        )
