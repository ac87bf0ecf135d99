"""Redis taken away mid-run: fail-open serves with local limits, fail-closed refuses, no call
outlives its deadline, and the shared limits come back with Redis."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import pytest

from router.errors import RateLimited, StateUnavailable
from router.keys import Principal
from router.state.base import BreakerSettings
from router.state.failover import FailoverState
from router.state.memory import MemoryState
from router.state.redis import RedisState
from tests.redis_fixture import RedisServer, redis_server  # noqa: F401

pytestmark = pytest.mark.xdist_group("redis")
TIMEOUT_S = 0.2
SLACK_S = 0.6  # generous on a loaded machine; what it rules out is a TCP timeout of seconds


def _state(url: str, on_failure: str, events: list[tuple[str, str]]) -> FailoverState:
    shared = RedisState(url, prefix=f"t{uuid.uuid4().hex[:8]}:", timeout_s=TIMEOUT_S, team_budgets={"t": 1.0})
    return FailoverState(shared, MemoryState({"t": 1.0}), on_failure=on_failure,  # type: ignore[arg-type]
                         timeout_s=TIMEOUT_S, retry_interval_s=0.2, on_fallback=lambda o, r: events.append((o, r)))


async def _timed(coro: object) -> tuple[float, object]:
    start = time.monotonic()
    try:
        result: object = await coro  # type: ignore[misc]
    except Exception as exc:  # noqa: BLE001 - the test inspects what came back
        result = exc
    return time.monotonic() - start, result


@pytest.fixture
def principal() -> Principal:
    return Principal(key_id="vk_" + uuid.uuid4().hex[:12], team="t", rpm=5)


async def test_fail_open_uses_local_limits_then_recovers(
    redis_server: RedisServer, principal: Principal, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    events: list[tuple[str, str]] = []
    state = _state(redis_server.url, "open", events)
    try:
        await state.limits.check(principal)  # shared: one of five taken in Redis
        hold = await state.budgets.reserve(principal, 0.1)
        assert hold.origin == "redis"
        redis_server.kill()
        with caplog.at_level(logging.WARNING, logger="aperture.state"):
            outcomes = [await _timed(state.limits.check(principal)) for _ in range(8)]
        assert all(elapsed < TIMEOUT_S + SLACK_S for elapsed, _ in outcomes)
        # The local bucket is this process's own full allowance of 5; the rest refused locally.
        assert sum(r is None for _, r in outcomes) == 5
        assert all(isinstance(r, RateLimited) for _, r in outcomes if r is not None)
        assert state.degraded and ("rate_limit", "local") in events
        assert any("serving with this process's own limits" in m for m in caplog.messages)
        await state.budgets.settle(hold, 0.1)  # cannot reach Redis: logged and counted, no raise
        assert ("budget_settle", "lost") in events
        local_hold = await state.budgets.reserve(principal, 0.2)
        assert local_hold.origin == "memory"
        await state.budgets.settle(local_hold, 0.2)
        assert await state.local.budgets.spent_today("t") == pytest.approx(0.2)

        redis_server.start()
        await asyncio.sleep(0.25)  # the retry interval
        with caplog.at_level(logging.WARNING, logger="aperture.state"):
            await state.limits.check(principal)
        assert not state.degraded
        assert any("reachable again" in m for m in caplog.messages)
        assert (await state.shared.limits.remaining(principal))["requests"] == 4  # counted in Redis
    finally:
        await state.close()


async def test_fail_closed_refuses_with_state_unavailable(redis_server: RedisServer, principal: Principal) -> None:  # noqa: F811
    events: list[tuple[str, str]] = []
    state = _state(redis_server.url, "closed", events)
    try:
        await state.limits.check(principal)
        redis_server.kill()
        for call in (state.limits.check(principal), state.budgets.reserve(principal, 0.1),
                     state.breakers.allow("openai:gpt-4o", BreakerSettings())):
            elapsed, result = await _timed(call)
            assert elapsed < TIMEOUT_S + SLACK_S
            assert isinstance(result, StateUnavailable)
            assert result.status == 503 and result.code == "state_unavailable"
        assert await state.local.limits.remaining(principal) == {"requests": 5}  # nothing taken locally
        await state.breakers.record_failure("openai:gpt-4o", BreakerSettings())  # never raises
        assert ("rate_limit", "refused") in events
        redis_server.start()
        await asyncio.sleep(0.25)
        await state.limits.check(principal)
        assert not state.degraded
    finally:
        await state.close()


async def test_no_call_outlives_its_deadline_on_a_redis_that_never_answers(principal: Principal) -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        await asyncio.sleep(30)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    events: list[tuple[str, str]] = []
    state = _state(f"redis://127.0.0.1:{port}/0", "open", events)
    try:
        elapsed, result = await _timed(state.limits.check(principal))
        assert result is None and elapsed < TIMEOUT_S + SLACK_S
        elapsed, result = await _timed(state.budgets.reserve(principal, 0.1))
        assert getattr(result, "origin", None) == "memory" and elapsed < TIMEOUT_S  # down: not retried yet
    finally:
        server.close()
        await state.close()
