"""The Redis state backend against a real redis-server: atomic across clients, shared, durable."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from router.errors import BudgetExceeded, RateLimited
from router.keys import Principal
from router.state.base import BreakerSettings
from router.state.redis import RedisState
from tests.redis_fixture import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.xdist_group("redis")


def _principal(**kw: object) -> Principal:
    return Principal(key_id="vk_" + uuid.uuid4().hex[:12], team=kw.pop("team", "t-" + uuid.uuid4().hex[:6]), **kw)  # type: ignore[arg-type]


@pytest.fixture
async def two(redis_server: RedisServer) -> AsyncIterator[tuple[RedisState, RedisState]]:  # noqa: F811
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    a = RedisState(redis_server.url, prefix=prefix, team_budgets={"capped": 1.0}, timeout_s=2.0)
    b = RedisState(redis_server.url, prefix=prefix, team_budgets={"capped": 1.0}, timeout_s=2.0)
    yield a, b
    await a.close()
    await b.close()


async def _count_ok(coros: list) -> int:  # type: ignore[type-arg]
    results = await asyncio.gather(*coros, return_exceptions=True)
    for r in results:
        assert r is None or isinstance(r, RateLimited | BudgetExceeded) or not isinstance(r, BaseException), r
    return sum(1 for r in results if not isinstance(r, BaseException))


async def test_rpm_is_atomic_across_two_connections(two: tuple[RedisState, RedisState]) -> None:
    a, b = two
    p = _principal(rpm=60)
    ok = await _count_ok([s.limits.check(p) for _ in range(100) for s in (a, b)])
    assert 60 <= ok <= 61  # 61: one token refilled while the burst ran
    with pytest.raises(RateLimited) as info:
        await a.limits.check(p)
    assert info.value.status == 429 and info.value.code == "rate_limit_exceeded"
    assert int(info.value.headers["retry-after"]) >= 1
    assert (await b.limits.remaining(p))["requests"] == 0


async def test_tpm_refusal_takes_nothing_and_oversize_has_no_retry_after(two: tuple[RedisState, RedisState]) -> None:
    a, b = two
    p = _principal(rpm=10, tpm=1000)
    await a.limits.check(p, 900)
    with pytest.raises(RateLimited):
        await b.limits.check(p, 200)
    assert await b.limits.remaining(p) == {"requests": 9, "tokens": 100}
    with pytest.raises(RateLimited) as info:
        await b.limits.check(p, 5000)
    assert "retry-after" not in info.value.headers
    await a.limits.adjust(p, -500)  # billed 500 fewer than estimated: given back
    assert (await b.limits.remaining(p))["tokens"] == 600


async def test_budget_across_two_clients_stops_at_the_cap(two: tuple[RedisState, RedisState]) -> None:
    a, b = two
    p = _principal(team="capped")
    estimate = 0.03

    async def one(s: RedisState) -> None:
        hold = await s.budgets.reserve(p, estimate)
        await asyncio.sleep(0)
        await s.budgets.settle(hold, estimate)

    ok = await _count_ok([one(s) for _ in range(40) for s in (a, b)])
    spent = await a.budgets.spent_today("capped")
    assert ok == 33 and spent == pytest.approx(0.99)
    assert 1.0 - estimate <= spent <= 1.0
    assert await b.budgets.reserved("capped") == 0
    with pytest.raises(BudgetExceeded) as info:
        await b.budgets.reserve(p, estimate)
    assert info.value.status == 402 and info.value.code == "budget_exceeded"


async def test_settle_and_release_are_idempotent_and_key_budget_applies(two: tuple[RedisState, RedisState]) -> None:
    a, b = two
    p = _principal(daily_budget_usd=0.10)
    hold = await a.budgets.reserve(p, 0.06)
    with pytest.raises(BudgetExceeded, match="this key"):
        await b.budgets.reserve(p, 0.06)
    await b.budgets.release(hold)
    await a.budgets.release(hold)
    hold = await b.budgets.reserve(p, 0.06)
    await a.budgets.settle(hold, 0.02)
    await b.budgets.settle(hold, 0.02)
    assert await a.budgets.spent_today_key(p.key_id) == pytest.approx(0.02)


async def test_ledger_survives_a_reconnect(redis_server: RedisServer) -> None:  # noqa: F811
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    p = _principal()
    first = RedisState(redis_server.url, prefix=prefix)
    await first.budgets.settle(await first.budgets.reserve(p, 0.5), 0.25)
    await first.close()
    second = RedisState(redis_server.url, prefix=prefix)
    try:
        assert await second.budgets.spent_today(p.team) == pytest.approx(0.25)
        day = datetime.now(UTC).date().isoformat()
        ttl = await second.client.ttl(f"{prefix}b:{day}:t:{p.team}")
        assert 86_400 < ttl <= 2 * 86_400
    finally:
        await second.close()


async def test_a_dead_replicas_hold_lapses(redis_server: RedisServer) -> None:  # noqa: F811
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    s = RedisState(redis_server.url, prefix=prefix, team_budgets={"x": 1.0}, hold_ttl_s=1.0)
    try:
        p = _principal(team="x")
        await s.budgets.reserve(p, 0.9)  # never settled: its replica "died"
        with pytest.raises(BudgetExceeded):
            await s.budgets.reserve(p, 0.5)
        await asyncio.sleep(1.2)
        await s.budgets.reserve(p, 0.5)
        assert await s.budgets.reserved("x") == pytest.approx(0.5)
    finally:
        await s.close()


async def test_breaker_opened_by_one_is_open_for_the_other(two: tuple[RedisState, RedisState]) -> None:
    a, b = two
    name, settings = "openai:" + uuid.uuid4().hex[:6], BreakerSettings(failure_threshold=3, cooldown_s=1.0)
    for _ in range(3):
        assert await a.breakers.allow(name, settings)
        await a.breakers.record_failure(name, settings)
    assert await b.breakers.state(name, settings) == "open"
    assert not await b.breakers.allow(name, settings)
    await asyncio.sleep(1.1)
    assert await b.breakers.state(name, settings) == "half_open"
    probes = await asyncio.gather(*(s.breakers.allow(name, settings) for s in (a, b, a, b)))
    assert probes.count(True) == 1  # exactly one probe across both
    await b.breakers.record_success(name, settings)
    assert await a.breakers.state(name, settings) == "closed"
    assert await a.breakers.allow(name, settings)
