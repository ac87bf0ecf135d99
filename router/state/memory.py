"""The in-process state backend: today's limiter, ledger and breakers behind the async interfaces.

The logic stays in :mod:`router.limits`, :mod:`router.budgets` and :mod:`router.breaker` (pure,
synchronous, atomic on one event loop); this module only adapts them, so ``memory`` behaves
exactly as the gateway always has. It is also what :mod:`router.state.failover` falls back on
when Redis is unreachable and ``state.on_failure`` is ``open``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from router.breaker import BreakerRegistry, BreakerState, CircuitBreaker
from router.budgets import BudgetLedger, Reservation
from router.keys import Principal
from router.limits import RateLimiter
from router.state.base import BreakerSettings


class MemoryRateLimits:
    def __init__(self, limiter: RateLimiter | None = None) -> None:
        self.limiter = limiter if limiter is not None else RateLimiter()

    async def check(self, principal: Principal, tokens: int = 0) -> None:
        self.limiter.check(principal, tokens)

    async def adjust(self, principal: Principal, delta_tokens: int) -> None:
        self.limiter.adjust(principal, delta_tokens)

    async def remaining(self, principal: Principal) -> dict[str, int]:
        return self.limiter.remaining(principal)


class MemoryBudgets:
    def __init__(self, ledger: BudgetLedger) -> None:
        self.ledger = ledger

    async def reserve(self, principal: Principal, estimate_usd: float) -> Reservation:
        return self.ledger.reserve(principal, estimate_usd)

    async def settle(self, reservation: Reservation, billed_usd: float) -> None:
        self.ledger.settle(reservation, billed_usd)

    async def release(self, reservation: Reservation) -> None:
        self.ledger.release(reservation)

    async def spent_today(self, team: str) -> float:
        return self.ledger.spent_today(team)

    async def spent_today_key(self, key_id: str) -> float:
        return self.ledger.spent_today_key(key_id)

    async def reserved(self, team: str) -> float:
        return self.ledger.reserved(team)


class MemoryBreakers:
    def __init__(self, registry: BreakerRegistry | None = None) -> None:
        self.registry = registry if registry is not None else BreakerRegistry()  # empty is falsy

    def _get(self, name: str, settings: BreakerSettings) -> CircuitBreaker:
        return self.registry.get(name, failure_threshold=settings.failure_threshold, cooldown_s=settings.cooldown_s)

    async def allow(self, name: str, settings: BreakerSettings) -> bool:
        return self._get(name, settings).allow()

    async def record_success(self, name: str, settings: BreakerSettings) -> None:
        self._get(name, settings).record_success()

    async def record_failure(self, name: str, settings: BreakerSettings) -> None:
        self._get(name, settings).record_failure()

    async def release(self, name: str, settings: BreakerSettings) -> None:
        self._get(name, settings).release()

    async def state(self, name: str, settings: BreakerSettings) -> BreakerState:
        return self._get(name, settings).state


class MemoryState:
    """One process's state (``state.backend: memory``)."""

    name = "memory"

    def __init__(
        self,
        team_budgets: Mapping[str, float | None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.limits = MemoryRateLimits(RateLimiter(clock))
        self.budgets = MemoryBudgets(BudgetLedger(team_budgets, clock=wall_clock))
        self.breakers = MemoryBreakers(BreakerRegistry(clock=clock))

    async def close(self) -> None:
        return None
