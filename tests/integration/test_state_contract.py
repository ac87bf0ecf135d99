"""One contract, every backend: memory and Redis give the same answers to the same calls.

The Redis scripts re-implement the bucket, ledger and breaker of the memory backend in Lua;
this suite holds them to the same semantics (refusals take nothing, Retry-After, idempotent
settlement, the breaker's single half-open probe). Time is real (Redis uses its own clock).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from router.errors import BudgetExceeded, RateLimited
from router.keys import Principal
from router.state.base import BreakerSettings, StateBackend
from router.state.memory import MemoryState
from router.state.redis import RedisState
from tests.redis_fixture import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.xdist_group("redis")
BUDGETS = {"t": 1.0}


@pytest.fixture(params=["memory", "redis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[StateBackend]:
    if request.param == "memory":
        backend: StateBackend = MemoryState(BUDGETS)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        backend = RedisState(server.url, prefix=f"t{uuid.uuid4().hex[:8]}:", team_budgets=BUDGETS, timeout_s=2.0)
    yield backend
    await backend.close()


def _p(**kw: object) -> Principal:
    return Principal(key_id="vk_" + uuid.uuid4().hex[:12], team="t", **kw)  # type: ignore[arg-type]


async def test_a_refusal_takes_nothing(state: StateBackend) -> None:
    p = _p(rpm=2, tpm=100)
    await state.limits.check(p, 90)
    with pytest.raises(RateLimited) as info:
        await state.limits.check(p, 20)
    assert info.value.headers["retry-after"] == "6"  # 10 tokens short at 100/min: 6 s
    assert await state.limits.remaining(p) == {"requests": 1, "tokens": 10}


async def test_retry_after_and_never_fitting_requests(state: StateBackend) -> None:
    p = _p(rpm=1, tpm=1000)
    await state.limits.check(p)
    with pytest.raises(RateLimited, match="1 requests per minute") as info:
        await state.limits.check(p)
    assert info.value.headers == {"retry-after": "60"}
    with pytest.raises(RateLimited, match="more than the key's limit of 1000 tokens") as info:
        await state.limits.check(_p(tpm=1000), 1001)
    assert info.value.headers == {}
    assert await state.limits.remaining(_p()) == {}


async def test_billed_overuse_delays_the_next_request(state: StateBackend) -> None:
    p = _p(tpm=1000)
    await state.limits.check(p, 500)
    await state.limits.adjust(p, 900)  # billed 900 more than estimated: level -400
    with pytest.raises(RateLimited):
        await state.limits.check(p, 1)
    assert (await state.limits.remaining(p))["tokens"] < 0


async def test_budget_reserve_settle_release(state: StateBackend) -> None:
    p = _p(daily_budget_usd=0.5)
    hold = await state.budgets.reserve(p, 0.4)
    assert await state.budgets.reserved("t") == pytest.approx(0.4)
    with pytest.raises(BudgetExceeded, match="this key") as info:
        await state.budgets.reserve(p, 0.2)
    assert info.value.status == 402 and info.value.code == "budget_exceeded"
    await state.budgets.settle(hold, 0.1)
    await state.budgets.settle(hold, 0.1)  # idempotent
    await state.budgets.release(hold)  # already closed: nothing
    assert await state.budgets.spent_today("t") == pytest.approx(0.1)
    assert await state.budgets.spent_today_key(p.key_id) == pytest.approx(0.1)
    assert await state.budgets.reserved("t") == 0
    other = _p()
    hold = await state.budgets.reserve(other, 0.85)
    with pytest.raises(BudgetExceeded, match="team 't'"):
        await state.budgets.reserve(other, 0.1)
    await state.budgets.release(hold)
    await state.budgets.reserve(other, 0.1)


async def test_breaker_state_machine(state: StateBackend) -> None:
    name, s = "p:" + uuid.uuid4().hex[:6], BreakerSettings(failure_threshold=2, cooldown_s=1.0)
    assert await state.breakers.state(name, s) == "closed"
    await state.breakers.record_failure(name, s)
    await state.breakers.record_success(name, s)  # a success in between resets the count
    await state.breakers.record_failure(name, s)
    assert await state.breakers.state(name, s) == "closed"
    await state.breakers.record_failure(name, s)
    assert await state.breakers.state(name, s) == "open" and not await state.breakers.allow(name, s)
    await asyncio.sleep(1.1)
    assert await state.breakers.state(name, s) == "half_open"
    assert await state.breakers.allow(name, s) and not await state.breakers.allow(name, s)
    await state.breakers.record_failure(name, s)  # the probe failed: open again at once
    assert await state.breakers.state(name, s) == "open"
    await asyncio.sleep(1.1)
    assert await state.breakers.allow(name, s)
    await state.breakers.release(name, s)  # the probe was cancelled: its slot is free
    assert await state.breakers.allow(name, s)
    await state.breakers.record_success(name, s)
    assert await state.breakers.state(name, s) == "closed" and await state.breakers.allow(name, s)
