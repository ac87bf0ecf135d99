"""What every stage may use besides the request itself: the gateway's shared dependencies.

One :class:`Services` per gateway process, shared by all requests. Stages read rate limits,
budgets and breakers through :attr:`Services.state` (a :class:`router.state.StateBackend`) at
request time. Given a built backend (``state``: Redis, shared by replicas) that is what they
use; otherwise ``state`` is this process's limiter, ledger and breaker registry behind the same
async interfaces (today's behaviour), read afresh so a test may swap one between requests.
The response cache (``cache``), when configured, is read by the cache stage. The guardrail
detectors (``guardrails``: the OCR reader and its cache) are built once per process by the
composition root; shadow-mode guardrail tasks are kept here until they finish. The paired
guard's shadow sender (``shadows``, :mod:`router.shadow`) lives here too: the route stage asks
it whether the day's shadow cap can still pay for a canary request's pair.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from router.blobs import BlobStore
from router.breaker import BreakerRegistry, BreakerState, upstream_key
from router.budgets import BudgetLedger
from router.config import AppConfig, ModelSpec, ProviderConfig
from router.guardrails.stage import Detectors, DetectorVerdict
from router.images.fetch import ImageFetcher
from router.images.intake import ImageLimits
from router.limits import RateLimiter
from router.policy import PolicySnapshot, explore_routes
from router.providers import ADAPTERS
from router.providers.base import ProviderSpec
from router.retry import RetryPolicy
from router.rules import Target
from router.shadow import ShadowBudget, ShadowSender
from router.state import BreakerSettings, StateBackend
from router.state.base import BreakerStore
from router.state.memory import MemoryBreakers, MemoryBudgets, MemoryRateLimits
from router.upstream import UpstreamClient

if TYPE_CHECKING:  # router.telemetry reads the context, which the stages import from here
    from router.cache import ResponseCache
    from router.pipeline.context import RequestContext
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
        state: StateBackend | None = None,
        cache: ResponseCache | None = None,
        guardrails: Detectors | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.fetcher = fetcher
        self.snapshot_source = snapshot
        self.telemetry = telemetry
        self.limiter = limiter if limiter is not None else RateLimiter()
        self.ledger = ledger if ledger is not None else BudgetLedger.from_config(config)
        self.breakers = breakers if breakers is not None else BreakerRegistry()  # an empty registry is falsy
        self.shared_state = state
        self.cache = cache
        self._local: LocalState | None = None
        self.blobs = blobs
        self.rng = rng or random.Random()
        # Without a reader (none was built) OCR-based detectors fail, open or closed as configured.
        self.guardrail_detectors = guardrails if guardrails is not None else Detectors(cache_size=config.guardrails.cache_size)
        self._shadow_tasks: set[asyncio.Task[list[DetectorVerdict]]] = set()
        self._stream_tails: set[asyncio.Task[None]] = set()
        # The paired guard's shadows: the route stage asks them whether a canary request can be paired.
        rollout = config.rollout
        self.shadows = ShadowSender(ShadowBudget(rollout.shadow_max_usd_per_day), rollout.shadow_max_in_flight)
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

    def track_shadow(self, ctx: RequestContext, task: asyncio.Task[list[DetectorVerdict]]) -> None:
        """Keep a shadow-mode guardrail task alive and record its verdicts when it finishes."""
        self._shadow_tasks.add(task)

        def done(finished: asyncio.Task[list[DetectorVerdict]]) -> None:
            self._shadow_tasks.discard(finished)
            failed = finished.cancelled() or finished.exception() is not None
            self.telemetry.record_shadow(ctx, [] if failed else finished.result(), failed=failed)

        task.add_done_callback(done)

    @property
    def shadow_pending(self) -> int:
        """Shadow-mode guardrail runs not finished yet."""
        return len(self._shadow_tasks)

    async def drain_shadow(self) -> None:
        """Wait for the shadow-mode guardrail tasks still running (at shutdown, and in tests)."""
        if self._shadow_tasks:
            await asyncio.gather(*list(self._shadow_tasks), return_exceptions=True)

    def track_stream_tail(self, task: asyncio.Task[None]) -> None:
        """Keep a relayed stream's billing and telemetry task until it ends (see
        :func:`router.pipeline.respond.relay`): its client may have left already."""
        self._stream_tails.add(task)
        task.add_done_callback(self._stream_tails.discard)

    async def drain_stream_tails(self) -> None:
        """Wait for the streams still being billed and traced (at shutdown)."""
        if self._stream_tails:
            await asyncio.gather(*list(self._stream_tails), return_exceptions=True)

    def policy_snapshot(self) -> PolicySnapshot:
        """The policy a request starting now would be routed by."""
        return self.snapshot_source()

    def model(self, target: Target) -> ModelSpec:
        return self.config.models[target.model]

    def provider(self, target: Target) -> ProviderConfig:
        return self.config.providers[self.config.models[target.model].provider]

    def retry_policy(self, target: Target) -> RetryPolicy:
        return RetryPolicy.from_provider(self.provider(target))

    @property
    def state(self) -> StateBackend:
        """The shared backend when one was given, else this process's own (see the module docstring)."""
        if self.shared_state is not None:
            return self.shared_state
        local = self._local
        if local is None or not local.wraps(self.limiter, self.ledger, self.breakers):
            local = self._local = LocalState(self.limiter, self.ledger, self.breakers)
        return local

    async def close_state(self) -> None:
        """Let go of the shared backend's and the cache's connections (at shutdown)."""
        if self.shared_state is not None:
            await self.shared_state.close()
        if self.cache is not None:
            await self.cache.close()

    def breaker(self, target: Target) -> SharedBreaker:
        spec = self.model(target)
        provider = self.provider(target)
        settings = BreakerSettings(failure_threshold=provider.cooldown_failures, cooldown_s=provider.cooldown_s)
        return SharedBreaker(self.state.breakers, upstream_key(spec.provider, spec.upstream), settings)


class LocalState:
    """One process's limiter, ledger and breakers as a :class:`StateBackend` (``memory``)."""

    name = "memory"

    def __init__(self, limiter: RateLimiter, ledger: BudgetLedger, breakers: BreakerRegistry) -> None:
        self.limits = MemoryRateLimits(limiter)
        self.budgets = MemoryBudgets(ledger)
        self.breakers = MemoryBreakers(breakers)

    def wraps(self, limiter: RateLimiter, ledger: BudgetLedger, breakers: BreakerRegistry) -> bool:
        return (self.limits.limiter is limiter and self.budgets.ledger is ledger
                and self.breakers.registry is breakers)

    async def close(self) -> None:
        return None


class SharedBreaker:
    """One upstream's breaker in the state backend, bound to its name and settings: what
    :func:`router.fallback.run_chain` calls (:class:`router.fallback.ChainBreaker`)."""

    def __init__(self, store: BreakerStore, name: str, settings: BreakerSettings) -> None:
        self.store = store
        self.name = name
        self.settings = settings

    async def allow(self) -> bool:
        return await self.store.allow(self.name, self.settings)

    async def record_success(self) -> None:
        await self.store.record_success(self.name, self.settings)

    async def record_failure(self) -> None:
        await self.store.record_failure(self.name, self.settings)

    async def release(self) -> None:
        await self.store.release(self.name, self.settings)

    async def state(self) -> BreakerState:
        return await self.store.state(self.name, self.settings)

    def retry_in_s(self) -> float:
        """The shared store keeps no opening time here: the cool-down is the longest wait."""
        return float(self.settings.cooldown_s)
