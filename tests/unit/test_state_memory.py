"""The memory state backend keeps today's in-process semantics behind the async interfaces."""

from __future__ import annotations

import asyncio

import pytest

from router.config import parse_config
from router.errors import BudgetExceeded, RateLimited
from router.keys import Principal
from router.state import FailoverState, MemoryState, build_state
from router.state.base import BreakerSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_limits_budgets_and_breakers_behave_as_before() -> None:
    clock = Clock()
    state = MemoryState({"t": 0.1}, clock=clock, wall_clock=clock)
    p = Principal(key_id="vk_1", team="t", rpm=2)
    results = await asyncio.gather(*(state.limits.check(p) for _ in range(3)), return_exceptions=True)
    assert sum(r is None for r in results) == 2 and isinstance(results[2], RateLimited)
    clock.now += 30
    await state.limits.check(p)
    hold = await state.budgets.reserve(p, 0.06)
    with pytest.raises(BudgetExceeded):
        await state.budgets.reserve(p, 0.06)
    await state.budgets.settle(hold, 0.05)
    assert await state.budgets.spent_today("t") == pytest.approx(0.05)
    settings = BreakerSettings(failure_threshold=2, cooldown_s=5)
    for _ in range(2):
        await state.breakers.record_failure("x", settings)
    assert await state.breakers.state("x", settings) == "open"
    assert not await state.breakers.allow("x", settings)
    clock.now += 5
    assert await state.breakers.allow("x", settings)
    assert not await state.breakers.allow("x", settings)  # one probe


def test_build_state_follows_the_config() -> None:
    base = "providers: {o: {kind: openai, base_url: 'http://127.0.0.1:1'}}\nmodels: {gpt-4o: {provider: o, upstream: gpt-4o, price: {input_per_mtok: 1, output_per_mtok: 1}, image: {rule: tile, base: 85, tile: 170}}}\n"
    assert isinstance(build_state(parse_config(base)), MemoryState)
    cfg = parse_config(base + "state: {backend: redis, url: 'redis://127.0.0.1:1/0', on_failure: closed}\n")
    state = build_state(cfg)
    assert isinstance(state, FailoverState) and state.guard.on_failure == "closed"
    assert cfg.state.url == "redis://127.0.0.1:1/0"


def test_state_url_defaults_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from router.config import StateConfig

    monkeypatch.setenv("APERTURE_REDIS_URL", "redis://127.0.0.1:7777/3")
    assert StateConfig().url == "redis://127.0.0.1:7777/3"
    monkeypatch.delenv("APERTURE_REDIS_URL")
    assert StateConfig().url == "redis://127.0.0.1:6379/0"


async def test_a_refused_redis_connection_falls_back_and_is_counted() -> None:

    from aperture.servers import listen_port
    from router.metrics import GatewayMetrics

    port = listen_port("127.0.0.1")  # nobody listens there, and no connect takes it as its source
    base = "providers: {o: {kind: openai, base_url: 'http://127.0.0.1:1'}}\nmodels: {gpt-4o: {provider: o, upstream: gpt-4o, price: {input_per_mtok: 1, output_per_mtok: 1}, image: {rule: tile, base: 85, tile: 170}}}\n"
    metrics = GatewayMetrics()
    state = build_state(parse_config(base + f"state: {{backend: redis, url: 'redis://127.0.0.1:{port}/0'}}\n"),
                        on_fallback=metrics.state_fallback)
    p = Principal(key_id="vk_1", team="t", rpm=1)
    await state.limits.check(p)
    with pytest.raises(RateLimited):
        await state.limits.check(p)  # the local bucket enforces the limit
    text = metrics.render().decode()
    assert 'aperture_state_fallbacks_total{operation="rate_limit",outcome="local"} 2.0' in text
    assert isinstance(state, FailoverState) and state.degraded
    await state.close()
