"""The state a gateway enforces across requests, behind three small async interfaces.

Rate limits (RPM/TPM), daily budgets and circuit breakers are what makes ``--workers 2`` or a
second machine double every limit when each process keeps its own. Each concern is one
interface with two implementations: :mod:`router.state.memory` (this process, today's
behaviour) and :mod:`router.state.redis` (shared by every replica pointing at one Redis or
Valkey). :mod:`router.state.failover` puts a Redis backend behind a deadline and decides what
happens when Redis is gone (``state.on_failure``).

Threading rules: every method is a coroutine and safe to call concurrently from one event
loop; the Redis implementations are atomic across processes (each operation is one Lua
script), the memory ones across tasks of one loop (no await inside a transition).

Example::

    state = build_state(config)               # router.state.build_state
    await state.limits.check(principal, tokens=1200)      # raises RateLimited
    hold = await state.budgets.reserve(principal, 0.012)  # raises BudgetExceeded
    ... await state.budgets.settle(hold, billed_usd) / await state.budgets.release(hold)
    if await state.breakers.allow("openai:gpt-4o", settings): ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from router.breaker import BreakerState
from router.budgets import Reservation
from router.keys import Principal

__all__ = [
    "BreakerSettings", "BreakerState", "BreakerStore", "BudgetStore", "RateLimitStore",
    "Reservation", "StateBackend",
]


@dataclass(frozen=True)
class BreakerSettings:
    """One upstream's trip threshold (consecutive retryable failures) and cooldown."""

    failure_threshold: int = 5
    cooldown_s: float = 30.0


class RateLimitStore(Protocol):
    async def check(self, principal: Principal, tokens: int = 0) -> None:
        """Take one request and ``tokens`` from the key's buckets or raise ``RateLimited``
        (with ``retry-after``); a refused request takes nothing."""

    async def adjust(self, principal: Principal, delta_tokens: int) -> None:
        """Correct the TPM bucket once billed usage is known (positive: used more)."""

    async def remaining(self, principal: Principal) -> dict[str, int]:
        """``{"requests": n, "tokens": n}`` for the limits the key has."""


class BudgetStore(Protocol):
    async def reserve(self, principal: Principal, estimate_usd: float) -> Reservation:
        """Hold the estimate against the key's and the team's daily budgets or raise
        ``BudgetExceeded``."""

    async def settle(self, reservation: Reservation, billed_usd: float) -> None:
        """Replace the hold with the billed cost (idempotent)."""

    async def release(self, reservation: Reservation) -> None:
        """Drop the hold without spending (idempotent)."""

    async def spent_today(self, team: str) -> float: ...

    async def spent_today_key(self, key_id: str) -> float: ...

    async def reserved(self, team: str) -> float: ...


class BreakerStore(Protocol):
    async def allow(self, name: str, settings: BreakerSettings) -> bool:
        """May a request go to upstream ``name`` now? In half-open, ``True`` claims the probe."""

    async def record_success(self, name: str, settings: BreakerSettings) -> None: ...

    async def record_failure(self, name: str, settings: BreakerSettings) -> None: ...

    async def release(self, name: str, settings: BreakerSettings) -> None:
        """The allowed request ended without a verdict: free a half-open probe slot."""

    async def state(self, name: str, settings: BreakerSettings) -> BreakerState: ...


class StateBackend(Protocol):
    """The three stores of one backend, and how to let go of its connections."""

    @property
    def name(self) -> str: ...

    @property
    def limits(self) -> RateLimitStore: ...

    @property
    def budgets(self) -> BudgetStore: ...

    @property
    def breakers(self) -> BreakerStore: ...

    async def close(self) -> None: ...
