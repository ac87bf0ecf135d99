"""A shared state backend with a deadline and a configured answer to its failure.

Every operation on the shared backend runs under ``asyncio.timeout(timeout_s)`` (on top of the
client's own socket timeouts), so no request waits on Redis past its deadline. When an
operation fails (refused connection, timeout, Redis error):

* ``on_failure="open"``: the operation is served by this process's own memory backend, the
  ``aperture_state_fallbacks{outcome="local"}`` counter grows, and one warning is logged when
  the shared store goes down (and one line when it is back);
* ``on_failure="closed"``: admission refuses with 503 ``state_unavailable``.

After a failure the shared store is not tried again for ``retry_interval_s`` (so a dead Redis
costs one timeout per interval, not one per request); then the next operation tries it again,
and redis-py opens a fresh connection: recovery needs nothing else. Bookkeeping that follows
an answer (settle, release, adjust, breaker verdicts) never raises: a failure there is logged
and counted, and a lost hold lapses after ``state.reservation_ttl_s``.

Example::

    state = FailoverState(RedisState(url), MemoryState(budgets), on_failure="open")
    await state.limits.check(principal, 1200)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

from redis.exceptions import RedisError

from router.breaker import BreakerState
from router.budgets import Reservation
from router.errors import StateUnavailable
from router.keys import Principal
from router.state.base import BreakerSettings, StateBackend

log = logging.getLogger("aperture.state")
T = TypeVar("T")
FAILURES = (RedisError, OSError, asyncio.TimeoutError)
FallbackHook = Callable[[str, str], None]  # (operation, outcome: "local" | "refused" | "lost")


class _Guard:
    """Runs one operation on the shared backend or applies the failure policy."""

    def __init__(
        self, shared: StateBackend, local: StateBackend, on_failure: Literal["open", "closed"],
        timeout_s: float, retry_interval_s: float, on_fallback: FallbackHook | None,
        clock: Callable[[], float],
    ) -> None:
        self.shared, self.local = shared, local
        self.on_failure = on_failure
        self.timeout_s, self.retry_interval_s = timeout_s, retry_interval_s
        self._on_fallback = on_fallback
        self._clock = clock
        self._down_until = 0.0
        self.down = False

    def _fallback(self, operation: str, outcome: str) -> None:
        if self._on_fallback is not None:
            self._on_fallback(operation, outcome)

    def _mark_down(self, operation: str, exc: BaseException) -> None:
        self._down_until = self._clock() + self.retry_interval_s
        if not self.down:
            self.down = True
            what = "serving with this process's own limits" if self.on_failure == "open" else "refusing requests"
            log.warning("state backend %s unavailable during %s (%s: %s); %s (state.on_failure=%s)",
                        self.shared.name, operation, type(exc).__name__, exc, what, self.on_failure)

    def _mark_up(self) -> None:
        if self.down:
            self.down = False
            log.warning("state backend %s is reachable again; shared limits resumed", self.shared.name)

    async def attempt(self, operation: str, call: Callable[[], Awaitable[T]]) -> tuple[bool, T | None]:
        """``(True, result)`` from the shared backend, or ``(False, None)`` when it is (or just went) down."""
        if self._clock() < self._down_until:
            return False, None
        try:
            # asyncio.timeout, not wait_for: no extra task per call (measurably cheaper per request).
            async with asyncio.timeout(self.timeout_s):
                result = await call()
        except FAILURES as exc:
            self._mark_down(operation, exc)
            return False, None
        self._mark_up()
        return True, result

    async def admit(self, operation: str, shared: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]) -> T:
        """An admission decision: shared, else local (open) or ``StateUnavailable`` (closed)."""
        ok, result = await self.attempt(operation, shared)
        if ok:
            return result  # type: ignore[return-value]
        if self.on_failure == "closed":
            self._fallback(operation, "refused")
            raise StateUnavailable(
                f"the shared state store ({self.shared.name}) is unavailable and the gateway is "
                "configured to refuse rather than enforce limits locally (state.on_failure: closed)",
                headers={"retry-after": "1"},
            )
        self._fallback(operation, "local")
        return await local()

    async def follow_up(self, operation: str, shared: Callable[[], Awaitable[object]],
                        local: Callable[[], Awaitable[object]] | None) -> None:
        """Bookkeeping after the fact: never raises; mirrored locally when running open."""
        ok, _ = await self.attempt(operation, shared)
        if ok:
            return
        if local is not None and self.on_failure == "open":
            self._fallback(operation, "local")
            await local()
        else:
            self._fallback(operation, "lost")


class _Limits:
    def __init__(self, guard: _Guard) -> None:
        self._g = guard

    async def check(self, principal: Principal, tokens: int = 0) -> None:
        s, m = self._g.shared.limits, self._g.local.limits
        await self._g.admit("rate_limit", lambda: s.check(principal, tokens), lambda: m.check(principal, tokens))

    async def adjust(self, principal: Principal, delta_tokens: int) -> None:
        s, m = self._g.shared.limits, self._g.local.limits
        await self._g.follow_up("rate_adjust", lambda: s.adjust(principal, delta_tokens),
                                lambda: m.adjust(principal, delta_tokens))

    async def remaining(self, principal: Principal) -> dict[str, int]:
        s, m = self._g.shared.limits, self._g.local.limits
        ok, result = await self._g.attempt("rate_remaining", lambda: s.remaining(principal))
        return result if ok and result is not None else await m.remaining(principal)


class _Budgets:
    def __init__(self, guard: _Guard) -> None:
        self._g = guard

    async def reserve(self, principal: Principal, estimate_usd: float) -> Reservation:
        s, m = self._g.shared.budgets, self._g.local.budgets
        return await self._g.admit("budget_reserve", lambda: s.reserve(principal, estimate_usd),
                                   lambda: m.reserve(principal, estimate_usd))

    async def settle(self, reservation: Reservation, billed_usd: float) -> None:
        if reservation.origin != self._g.shared.name:
            await self._g.local.budgets.settle(reservation, billed_usd)
            return
        s = self._g.shared.budgets
        await self._g.follow_up("budget_settle", lambda: s.settle(reservation, billed_usd), None)

    async def release(self, reservation: Reservation) -> None:
        if reservation.origin != self._g.shared.name:
            await self._g.local.budgets.release(reservation)
            return
        s = self._g.shared.budgets
        await self._g.follow_up("budget_release", lambda: s.release(reservation), None)

    async def _read(self, operation: str, shared: Callable[[], Awaitable[float]],
                    local: Callable[[], Awaitable[float]]) -> float:
        ok, result = await self._g.attempt(operation, shared)
        return result if ok and result is not None else await local()

    async def spent_today(self, team: str) -> float:
        s, m = self._g.shared.budgets, self._g.local.budgets
        return await self._read("budget_read", lambda: s.spent_today(team), lambda: m.spent_today(team))

    async def spent_today_key(self, key_id: str) -> float:
        s, m = self._g.shared.budgets, self._g.local.budgets
        return await self._read("budget_read", lambda: s.spent_today_key(key_id), lambda: m.spent_today_key(key_id))

    async def reserved(self, team: str) -> float:
        s, m = self._g.shared.budgets, self._g.local.budgets
        return await self._read("budget_read", lambda: s.reserved(team), lambda: m.reserved(team))


class _Breakers:
    def __init__(self, guard: _Guard) -> None:
        self._g = guard

    async def allow(self, name: str, settings: BreakerSettings) -> bool:
        s, m = self._g.shared.breakers, self._g.local.breakers
        return await self._g.admit("breaker_allow", lambda: s.allow(name, settings), lambda: m.allow(name, settings))

    async def _verdict(self, op: str, name: str, settings: BreakerSettings) -> None:
        s, m = self._g.shared.breakers, self._g.local.breakers
        await self._g.follow_up(f"breaker_{op}", lambda: getattr(s, op)(name, settings),
                                lambda: getattr(m, op)(name, settings))

    async def record_success(self, name: str, settings: BreakerSettings) -> None:
        await self._verdict("record_success", name, settings)

    async def record_failure(self, name: str, settings: BreakerSettings) -> None:
        await self._verdict("record_failure", name, settings)

    async def release(self, name: str, settings: BreakerSettings) -> None:
        await self._verdict("release", name, settings)

    async def state(self, name: str, settings: BreakerSettings) -> BreakerState:
        s, m = self._g.shared.breakers, self._g.local.breakers
        ok, result = await self._g.attempt("breaker_state", lambda: s.state(name, settings))
        return result if ok and result is not None else await m.state(name, settings)


class FailoverState:
    """A shared backend guarded by deadlines, with a local backend for fail-open."""

    def __init__(
        self, shared: StateBackend, local: StateBackend, *, on_failure: Literal["open", "closed"] = "open",
        timeout_s: float = 0.25, retry_interval_s: float = 1.0, on_fallback: FallbackHook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.guard = _Guard(shared, local, on_failure, timeout_s, retry_interval_s, on_fallback, clock)
        self.name = shared.name
        self.shared, self.local = shared, local
        self.limits = _Limits(self.guard)
        self.budgets = _Budgets(self.guard)
        self.breakers = _Breakers(self.guard)

    @property
    def degraded(self) -> bool:
        """The last shared operation failed (limits are local or refused until it answers)."""
        return self.guard.down

    async def close(self) -> None:
        await self.shared.close()
        await self.local.close()
