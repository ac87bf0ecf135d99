"""Shared or per-process state for rate limits, budgets and circuit breakers (see ``base``).

Example::

    state = build_state(config, on_fallback=metrics.state_fallback)
    await state.limits.check(principal, tokens)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.state.base import BreakerSettings, StateBackend
from router.state.failover import FailoverState, FallbackHook
from router.state.memory import MemoryState

if TYPE_CHECKING:
    from router.config import AppConfig

__all__ = ["BreakerSettings", "FailoverState", "MemoryState", "StateBackend", "build_state"]


def build_state(config: AppConfig, *, on_fallback: FallbackHook | None = None) -> StateBackend:
    """The backend ``config.state`` names; Redis comes guarded by :class:`FailoverState`.

    No connection is opened here: redis-py connects on the first operation.
    """
    budgets = {name: team.daily_budget_usd for name, team in config.teams.items()}
    local = MemoryState(budgets)
    settings = config.state
    if settings.backend == "memory":
        return local
    from router.state.redis import RedisState

    shared = RedisState(
        settings.url, team_budgets=budgets, prefix=settings.key_prefix, timeout_s=settings.timeout_s,
        hold_ttl_s=settings.reservation_ttl_s,
    )
    return FailoverState(
        shared, local, on_failure=settings.on_failure, timeout_s=settings.timeout_s,
        retry_interval_s=settings.retry_interval_s, on_fallback=on_fallback,
    )
