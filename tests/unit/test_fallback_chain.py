from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from router.breaker import BreakerRegistry
from router.errors import (
    BudgetExceeded,
    GatewayError,
    InvalidRequest,
    UpstreamFailed,
    UpstreamUnavailable,
)
from router.fallback import ChainFailed, ChainResult, ChainUnavailable, run_chain
from router.providers.base import UpstreamError
from router.retry import RetryPolicy
from router.upstream import UpstreamTransportError

KEY = "sk-live-SECRET-abcdef0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Harness:
    """Scripted upstreams: each target name maps to a list of outcomes, consumed in order."""

    def __init__(self, script: dict[str, list[object]], *, max_retries: int = 2, threshold: int = 5) -> None:
        self.script = {k: list(v) for k, v in script.items()}
        self.calls: list[tuple[str, int]] = []
        self.sleeps: list[float] = []
        self.clock = Clock()
        self.breakers = BreakerRegistry(failure_threshold=threshold, cooldown_s=30, clock=self.clock)
        self.policy = RetryPolicy(max_retries=max_retries, base_s=0.5, max_s=4.0, jitter="none")
        self.accepts: Callable[[str, UpstreamError], bool] = lambda t, e: True

    async def attempt(self, target: str, attempt_no: int) -> str:
        self.calls.append((target, attempt_no))
        self.clock.now += 0.01
        outcome = self.script[target].pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return str(outcome)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    async def run(self, targets: list[str]) -> ChainResult[str, str]:
        return await run_chain(
            targets,
            self.attempt,
            policy_for=lambda t: self.policy,
            breaker_for=self.breakers.get,
            accepts_image=lambda t, e: self.accepts(t, e),
            sleep=self.sleep,
            rng=random.Random(0),
            clock=self.clock,
        )


def up(status: int, *, retryable: bool | None = None, after: float | None = None, **kw: object) -> UpstreamError:
    if retryable is None:
        retryable = status in (408, 409, 429) or status >= 500
    return UpstreamError(f"upstream {status}", status=status, retryable=retryable, retry_after_s=after, **kw)  # type: ignore[arg-type]


async def test_retry_then_success_honours_retry_after() -> None:
    h = Harness({"a": [up(429, after=1.25), up(503), "ok"]})
    res = await h.run(["a"])
    assert res.result == "ok" and res.target == "a"
    assert h.sleeps == [1.25, 1.0]  # server hint, then backoff cap 0.5*2^1 (no jitter)
    assert [(r.attempt_no, r.status, r.outcome) for r in res.attempts] == [
        (0, 429, "error"), (1, 503, "error"), (2, 200, "ok")
    ]
    assert res.attempts[0].delay_s == 1.25 and res.attempts[0].retryable
    assert res.retries == 2
    assert all(r.duration_s == pytest.approx(0.01) for r in res.attempts)


async def test_long_retry_after_fails_over_without_waiting() -> None:
    h = Harness({"a": [up(429, after=120)], "b": ["ok"]})
    res = await h.run(["a", "b"])
    assert res.target == "b" and h.sleeps == []


@pytest.mark.parametrize("status", [500, 529])
async def test_falls_back_to_next_target_after_retries(status: int) -> None:
    h = Harness({"a": [up(status)] * 3, "b": ["ok-b"]})
    res = await h.run(["a", "b"])
    assert res.result == "ok-b"
    assert h.calls == [("a", 0), ("a", 1), ("a", 2), ("b", 0)]
    assert len(h.sleeps) == 2
    assert res.path == ["a", "b"] and res.retries == 3


async def test_terminal_bad_request_stops_the_chain() -> None:
    h = Harness({"a": [up(400)], "b": ["never"]})
    with pytest.raises(ChainFailed) as info:
        await h.run(["a", "b"])
    assert h.calls == [("a", 0)] and h.sleeps == []
    err = info.value
    assert err.status == 400 and err.code == "upstream_bad_request"
    assert isinstance(err, UpstreamFailed) and len(err.attempts) == 1


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_our_credentials_or_model_are_per_target(status: int) -> None:
    h = Harness({"a": [up(status, retryable=True)], "b": ["ok"]})
    res = await h.run(["a", "b"])
    assert h.calls == [("a", 0), ("b", 0)] and res.target == "b"


@pytest.mark.parametrize(
    "error",
    [
        up(429, retryable=False, provider_code="insufficient_quota"),
        up(429, retryable=False, provider_code="RESOURCE_EXHAUSTED"),  # Gemini per-day quota
        up(500, retryable=False),  # x-should-retry: false
        UpstreamTransportError("bad scheme", kind="protocol"),
    ],
)
async def test_non_retryable_target_failures_move_on_without_retry(error: UpstreamError) -> None:
    h = Harness({"a": [error], "b": ["ok"]})
    await h.run(["a", "b"])
    assert h.calls == [("a", 0), ("b", 0)] and h.sleeps == []


async def test_budget_exceeded_stops_the_chain_as_is() -> None:
    h = Harness({"a": [BudgetExceeded("over budget")], "b": ["never"]})
    with pytest.raises(BudgetExceeded):
        await h.run(["a", "b"])
    assert h.calls == [("a", 0)]


async def test_image_rejected_skips_targets_that_would_not_accept_it() -> None:
    rejected = up(400, retryable=False, image_rejected=True)
    h = Harness({"a": [rejected], "b": ["never"], "c": ["ok-c"]})
    asked: list[tuple[str, UpstreamError]] = []

    def accepts(target: str, err: UpstreamError) -> bool:
        asked.append((target, err))
        return target == "c"

    h.accepts = accepts
    res = await h.run(["a", "b", "c"])
    assert res.result == "ok-c"
    assert h.calls == [("a", 0), ("c", 0)]
    assert asked == [("b", rejected), ("c", rejected)]
    assert [(r.target, r.error_code, r.outcome) for r in res.attempts] == [
        ("a", "upstream_image_rejected", "error"),
        ("b", "image_not_accepted", "skipped"),
        ("c", None, "ok"),
    ]


async def test_image_rejected_everywhere_is_a_400() -> None:
    h = Harness({"a": [up(400, retryable=False, image_rejected=True)], "b": ["never"]})
    h.accepts = lambda t, e: False
    with pytest.raises(ChainFailed) as info:
        await h.run(["a", "b"])
    assert info.value.status == 400 and info.value.code == "upstream_image_rejected"


async def test_breaker_trips_skips_and_recovers() -> None:
    h = Harness({"a": [up(500)] * 2 + ["a-back"], "b": ["b1", "b2", "b3"]}, max_retries=0, threshold=2)
    assert (await h.run(["a", "b"])).result == "b1"
    assert (await h.run(["a", "b"])).result == "b2"
    assert h.breakers.get("a").state == "open"
    res = await h.run(["a", "b"])
    assert res.result == "b3"
    assert res.attempts[0].error_code == "circuit_open" and res.attempts[0].outcome == "skipped"
    assert h.calls.count(("a", 0)) == 2  # the open breaker refused without calling
    h.clock.now += 30
    res = await h.run(["a", "b"])
    assert res.result == "a-back" and h.breakers.get("a").state == "closed"


async def test_all_breakers_open_or_unreachable_is_unavailable() -> None:
    h = Harness({"a": [UpstreamTransportError("connect refused", kind="connect")] * 3, "b": []}, threshold=1)
    h.breakers.get("b").record_failure()
    with pytest.raises(ChainUnavailable) as info:
        await h.run(["a", "b"])
    err = info.value
    assert isinstance(err, UpstreamUnavailable) and err.status == 503
    assert err.code == "upstream_unavailable"
    assert [r.error_code for r in err.attempts] == ["upstream_unreachable", "circuit_open"]


async def test_exhaustion_carries_last_error_and_hides_credentials() -> None:
    leaky = up(401, retryable=False)
    leaky.message = f"Incorrect API key provided: {KEY}"
    h = Harness({"a": [up(500)] * 3, "b": [leaky]})
    with pytest.raises(ChainFailed) as info:
        await h.run(["a", "b"])
    err = info.value
    assert err.status == 502 and err.code == "upstream_auth_failed"
    assert err.last_error is leaky
    assert KEY not in err.message and KEY not in str(err.body())
    assert len(err.attempts) == 4


async def test_rate_limited_everywhere_answers_429_with_retry_after() -> None:
    h = Harness({"a": [up(429, after=45)], "b": [up(429, after=50.2)]})
    with pytest.raises(ChainFailed) as info:
        await h.run(["a", "b"])
    assert info.value.status == 429 and info.value.headers == {"retry-after": "51"}


async def test_our_own_per_route_refusal_surfaces_when_no_route_takes_it() -> None:
    h = Harness({"a": [InvalidRequest("tools unsupported")], "b": [InvalidRequest("tools unsupported")]})
    with pytest.raises(InvalidRequest):
        await h.run(["a", "b"])
    assert h.calls == [("a", 0), ("b", 0)]


async def test_cancellation_releases_the_half_open_probe() -> None:
    h = Harness({"a": []}, threshold=1)
    breaker = h.breakers.get("a")
    breaker.record_failure()
    h.clock.now += 30

    async def hang(target: str, attempt_no: int) -> str:
        await asyncio.sleep(10)
        return "late"

    task = asyncio.create_task(
        run_chain(["a"], hang, policy_for=lambda t: h.policy, breaker_for=h.breakers.get,
                  accepts_image=lambda t, e: True, clock=h.clock)
    )
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.allow()  # the probe slot was freed


async def test_empty_chain_and_unexpected_errors() -> None:
    h = Harness({"a": [RuntimeError("bug")]})
    with pytest.raises(ChainFailed):
        await h.run([])
    with pytest.raises(RuntimeError):
        await h.run(["a"])
    assert isinstance(ChainFailed("x", attempts=[], last_error=None), GatewayError)
