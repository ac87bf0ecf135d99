"""The Redis state backend: limits, budgets and breakers shared by every replica (redis-py asyncio).

Every operation is one Lua script (:mod:`router.state.lua`), so it is atomic across processes
and costs one round trip. Keys (under ``state.key_prefix``):

* ``rl:{key_id}:rpm`` / ``rl:{key_id}:tpm``: a token bucket; expires when it would be full again.
* ``b:{YYYY-MM-DD}:t:{team}`` / ``b:{day}:k:{key_id}``: the day's spent (``s``) and held (``r``)
  nano-dollars; they expire two days later, so the day's ledger survives gateway restarts.
* ``r:seq``, ``r:data``, ``r:open``: reservation ids, their amounts, and when each hold lapses
  (a replica that died mid-request frees its hold after ``state.reservation_ttl_s``).
* ``br:{provider:model}``: one breaker (state, consecutive failures, opened-at, probe).

Errors from Redis propagate as ``redis.exceptions.RedisError`` / ``OSError`` /
``asyncio.TimeoutError``; :mod:`router.state.failover` decides what a failure means.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from router.breaker import BreakerState
from router.budgets import Reservation
from router.errors import BudgetExceeded, RateLimited
from router.keys import Principal
from router.limits import WINDOW_S
from router.state import lua
from router.state.base import BreakerSettings

NANO = 1_000_000_000
DAY_TTL_S = 2 * 86_400
BREAKER_TTL_S = 86_400


def connect(url: str, timeout_s: float) -> aioredis.Redis:
    """A client whose every socket operation gives up after ``timeout_s`` and never retries on
    its own (the caller's deadline is the budget; a retry would spend it twice)."""
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0), health_check_interval=30,
    )


def to_nano(usd: float | None) -> int:
    """USD as integer nano-dollars; ``None`` (no budget) as -1; negatives and NaN as 0."""
    if usd is None:
        return -1
    return int(round(usd * NANO)) if math.isfinite(usd) and usd > 0 else 0


def _utc_day(clock: Callable[[], float]) -> date:
    return datetime.fromtimestamp(clock(), UTC).date()


class RedisRateLimits:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._prefix = prefix
        self._take = client.register_script(lua.RATE_LIMIT)
        self._adjust = client.register_script(lua.ADJUST_TOKENS)

    def _keys(self, principal: Principal) -> list[str]:
        base = f"{self._prefix}rl:{principal.key_id}:"
        return [base + "rpm", base + "tpm"]

    def _limits(self, principal: Principal) -> tuple[int, int]:
        return (-1 if principal.rpm is None else principal.rpm, -1 if principal.tpm is None else principal.tpm)

    async def check(self, principal: Principal, tokens: int = 0) -> None:
        if principal.rpm is None and principal.tpm is None:
            return
        rpm, tpm = self._limits(principal)
        reply = await self._take(keys=self._keys(principal), args=[rpm, tpm, max(tokens, 0), WINDOW_S, "take"])
        which = int(reply[0])
        if which == 0:
            return
        wait_ms, limit, amount = int(reply[1]), int(reply[2]), int(reply[3])
        what = "requests" if which == 1 else "tokens"
        if wait_ms < 0:
            raise RateLimited(
                f"this request needs about {amount} {what}, more than the key's limit of "
                f"{limit} {what} per minute"
            )
        retry_after = max(1, math.ceil(wait_ms / 1000))
        raise RateLimited(
            f"rate limit of {limit} {what} per minute reached for this key; try again in {retry_after}s",
            headers={"retry-after": str(retry_after)},
        )

    async def adjust(self, principal: Principal, delta_tokens: int) -> None:
        if principal.tpm is None or delta_tokens == 0:
            return
        await self._adjust(keys=self._keys(principal)[1:], args=[principal.tpm, delta_tokens, WINDOW_S])

    async def remaining(self, principal: Principal) -> dict[str, int]:
        rpm, tpm = self._limits(principal)
        if rpm < 0 and tpm < 0:
            return {}
        reply = await self._take(keys=self._keys(principal), args=[rpm, tpm, 0, WINDOW_S, "peek"])
        out: dict[str, int] = {}
        if rpm >= 0:
            out["requests"] = int(reply[1])
        if tpm >= 0:
            out["tokens"] = int(reply[2])
        return out


class RedisBudgets:
    def __init__(
        self, client: aioredis.Redis, prefix: str, team_budgets: Mapping[str, float | None],
        *, hold_ttl_s: float, clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self.team_budgets = dict(team_budgets)
        self._hold_ttl_s = hold_ttl_s
        self._clock = clock
        self._reserve = client.register_script(lua.RESERVE)
        self._close = client.register_script(lua.CLOSE)

    async def reserve(self, principal: Principal, estimate_usd: float) -> Reservation:
        day = _utc_day(self._clock)
        amount = max(0, to_nano(estimate_usd))
        reply = await self._reserve(args=[
            self._prefix, day.isoformat(), principal.team, principal.key_id, amount,
            to_nano(self.team_budgets.get(principal.team)), to_nano(principal.daily_budget_usd),
            self._hold_ttl_s, DAY_TTL_S,
        ])
        if int(reply[0]) == 1:
            return Reservation(int(reply[1]), principal.key_id, principal.team, amount / NANO, day, origin="redis")
        what = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        spent, held, budget = (int(v) / NANO for v in reply[2:5])
        label = f"team {principal.team!r}" if what == "team" else "this key"
        raise BudgetExceeded(
            f"the daily budget of ${budget:.2f} for {label} would be exceeded (spent ${spent:.4f}, "
            f"in flight ${held:.4f}, this request up to ${amount / NANO:.4f}); it resets at 00:00 UTC"
        )

    async def _finish(self, reservation: Reservation, billed_nano: int) -> None:
        today = _utc_day(self._clock).isoformat()
        await self._close(args=[self._prefix, reservation.id, billed_nano, today, DAY_TTL_S])

    async def settle(self, reservation: Reservation, billed_usd: float) -> None:
        await self._finish(reservation, max(0, to_nano(billed_usd)))

    async def release(self, reservation: Reservation) -> None:
        await self._finish(reservation, -1)

    async def _field(self, what: str, name: str, field: str) -> float:
        day = _utc_day(self._clock).isoformat()
        value = await self._client.hget(f"{self._prefix}b:{day}:{what}:{name}", field)
        return int(value or 0) / NANO

    async def spent_today(self, team: str) -> float:
        return await self._field("t", team, "s")

    async def spent_today_key(self, key_id: str) -> float:
        return await self._field("k", key_id, "s")

    async def reserved(self, team: str) -> float:
        return await self._field("t", team, "r")


class RedisBreakers:
    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._prefix = prefix
        self._script = client.register_script(lua.BREAKER)

    async def _op(self, op: str, name: str, settings: BreakerSettings) -> tuple[bool, BreakerState]:
        reply = await self._script(
            keys=[f"{self._prefix}br:{name}"],
            args=[op, settings.failure_threshold, settings.cooldown_s, BREAKER_TTL_S],
        )
        state = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        return bool(int(reply[0])), cast(BreakerState, state)

    async def allow(self, name: str, settings: BreakerSettings) -> bool:
        return (await self._op("allow", name, settings))[0]

    async def record_success(self, name: str, settings: BreakerSettings) -> None:
        await self._op("success", name, settings)

    async def record_failure(self, name: str, settings: BreakerSettings) -> None:
        await self._op("failure", name, settings)

    async def release(self, name: str, settings: BreakerSettings) -> None:
        await self._op("release", name, settings)

    async def state(self, name: str, settings: BreakerSettings) -> BreakerState:
        return (await self._op("state", name, settings))[1]


class RedisState:
    """State shared through one Redis (``state.backend: redis``)."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        team_budgets: Mapping[str, float | None] | None = None,
        prefix: str = "aperture:",
        timeout_s: float = 0.25,
        hold_ttl_s: float = 900.0,
        clock: Callable[[], float] = time.time,
        client: Any = None,
    ) -> None:
        self.url = url
        self.client: aioredis.Redis = client or connect(url, timeout_s)
        self.limits = RedisRateLimits(self.client, prefix)
        self.budgets = RedisBudgets(self.client, prefix, team_budgets or {}, hold_ttl_s=hold_ttl_s, clock=clock)
        self.breakers = RedisBreakers(self.client, prefix)

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def close(self) -> None:
        await self.client.aclose()
