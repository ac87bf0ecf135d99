"""Run one request down its route chain: retries per route, breakers, fallback, one verdict.

For each target in order:

* an open breaker skips it (recorded as ``circuit_open``);
* the attempt is tried up to ``1 + policy.max_retries`` times; only retryable failures are
  retried, after :func:`router.retry.retry_delay` (a server's Retry-After longer than the
  policy's ``max_wait_s`` fails over at once instead of waiting);
* failures that belong to *this* target move on to the next: retries used up, 5xx, 401/403
  (our credentials for that provider), 402/404 and non-retryable 429s (that account's quota or
  model: ``insufficient_quota``, spend caps, Gemini per-day quotas);
* a provider refusing the image itself (``image_rejected``) moves on only to targets for which
  ``accepts_image(target, error)`` says yes (the caller knows formats, limits and transcoding);
  the others are skipped (recorded as ``image_not_accepted``);
* any other terminal upstream 4xx (a malformed request) and every refusal of ours that ends the
  request (budget, rate limit, auth) stop the chain at once.

On exhaustion :class:`ChainFailed` (an ``UpstreamFailed``) carries the attempts and the last
upstream error's message and code; :class:`ChainUnavailable` (an ``UpstreamUnavailable``, 503)
is raised instead when no upstream answered at all (every target open-breakered or
unreachable). Messages never carry credentials: a 401/403 upstream text is replaced.

Streaming: the caller's attempt returns as soon as the first chunk has arrived; from then on the
response belongs to the client and a break is handled by the app (no fallback mid-stream).

Example::

    result = await run_chain(
        targets, attempt,
        policy_for=lambda t: policies[t.model], breaker_for=lambda t: breakers.get(t.model),
        accepts_image=lambda t, err: can_send_image(t),
    )
    result.result, result.target, result.attempts
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, Protocol, TypeVar

from router.breaker import BreakerState, CircuitBreaker
from router.errors import (
    AuthenticationFailed,
    BudgetExceeded,
    GatewayError,
    RateLimited,
    UpstreamFailed,
    UpstreamUnavailable,
)
from router.providers.base import UpstreamError
from router.retry import TERMINAL_PROVIDER_CODES, RetryPolicy, is_retryable, retry_delay

T = TypeVar("T")
R = TypeVar("R")

Outcome = Literal["ok", "error", "skipped"]
# Failures that belong to one target's account/model/credentials: try the next target.
# A 429 that is not retryable is a quota (insufficient_quota, spend cap, Gemini per-day).
PER_TARGET_STATUSES = frozenset({401, 402, 403, 404, 429})
# Our own refusals that end the whole request wherever they are raised.
REQUEST_FATAL = (BudgetExceeded, RateLimited, AuthenticationFailed)


@dataclass(frozen=True)
class AttemptRecord(Generic[T]):
    """One try (or skip) of one target. ``attempt_no`` is 0 for a target's first try.

    ``status`` is the upstream's HTTP status (200 on success, ``None`` when nothing answered);
    ``delay_s`` the wait before the next try of the same target; ``outcome`` says whether it
    succeeded, failed or was skipped without sending anything.
    """

    target: T
    attempt_no: int
    status: int | None
    error_code: str | None
    retryable: bool
    delay_s: float
    duration_s: float
    outcome: Outcome = "error"


@dataclass(frozen=True)
class ChainResult(Generic[T, R]):
    result: R
    target: T
    attempts: list[AttemptRecord[T]] = field(default_factory=list)

    @property
    def path(self) -> list[T]:
        """The targets actually sent to, in order, once each (for the span's fallback path)."""
        out: list[T] = []
        for a in self.attempts:
            if a.outcome != "skipped" and a.target not in out:
                out.append(a.target)
        return out

    @property
    def retries(self) -> int:
        """Tries beyond the first, across all targets (skips excluded)."""
        return max(0, sum(1 for a in self.attempts if a.outcome != "skipped") - 1)


class _ChainError:
    attempts: list[AttemptRecord[Any]]
    last_error: GatewayError | None


class ChainFailed(UpstreamFailed, _ChainError):
    """Every route failed; ``last_error`` is the last upstream verdict, ``attempts`` the trail."""

    def __init__(
        self,
        message: str,
        *,
        attempts: list[AttemptRecord[Any]],
        last_error: GatewayError | None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, status=status, headers=headers)
        self.attempts = attempts
        self.last_error = last_error


class ChainUnavailable(UpstreamUnavailable, _ChainError):
    """No upstream answered: every target was open-breakered or unreachable."""

    def __init__(
        self, message: str, *, attempts: list[AttemptRecord[Any]], last_error: GatewayError | None
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error


class ChainBreaker(Protocol):
    """One target's breaker as the chain uses it: async, so its state may live in Redis
    (:class:`router.pipeline.services.SharedBreaker`); a local :class:`CircuitBreaker` is adapted."""

    async def allow(self) -> bool: ...

    async def record_success(self) -> None: ...

    async def record_failure(self) -> None: ...

    async def release(self) -> None: ...

    async def state(self) -> BreakerState: ...

    def retry_in_s(self) -> float:
        """Seconds until an open breaker lets a probe through (for ``Retry-After``)."""
        ...


class LocalBreaker:
    """A :class:`CircuitBreaker` of this process behind the async :class:`ChainBreaker` calls."""

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker

    async def allow(self) -> bool:
        return self.breaker.allow()

    async def record_success(self) -> None:
        self.breaker.record_success()

    async def record_failure(self) -> None:
        self.breaker.record_failure()

    async def release(self) -> None:
        self.breaker.release()

    async def state(self) -> BreakerState:
        return self.breaker.state

    def retry_in_s(self) -> float:
        return self.breaker.retry_in_s()


def _chain_breaker(breaker: CircuitBreaker | ChainBreaker) -> ChainBreaker:
    return LocalBreaker(breaker) if isinstance(breaker, CircuitBreaker) else breaker


def _status(err: GatewayError) -> int | None:
    """The upstream's HTTP status; ``None`` when no upstream answered (transport, our refusal)."""
    if not isinstance(err, UpstreamError) or getattr(err, "kind", None) is not None:
        return None
    return err.status


def _is_per_target(err: GatewayError) -> bool:
    return err.status in PER_TARGET_STATUSES or (
        getattr(err, "provider_code", None) in TERMINAL_PROVIDER_CODES
    )


def _counts_as_failure(err: GatewayError) -> bool:
    """Does this error say the upstream is unhealthy (breaker food)?"""
    return isinstance(err, UpstreamError) and is_retryable(err)


def _public_message(err: GatewayError) -> str:
    if err.status in (401, 403):
        return f"the upstream refused the gateway's credentials (status {err.status})"
    return err.message


async def run_chain(
    targets: Sequence[T],
    attempt: Callable[[T, int], Awaitable[R]],
    *,
    policy_for: Callable[[T], RetryPolicy],
    breaker_for: Callable[[T], CircuitBreaker | ChainBreaker],
    accepts_image: Callable[[T, UpstreamError], bool],
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ChainResult[T, R]:
    """Try ``targets`` in order with retries; see the module docstring for the rules."""
    if not targets:
        raise ChainFailed("no route to try", attempts=[], last_error=None)
    rng = rng or random.Random()
    state: _ChainState[T] = _ChainState()
    for target in targets:
        if state.image_error is not None and not accepts_image(target, state.image_error):
            state.records.append(AttemptRecord(target, 0, None, "image_not_accepted", False, 0.0, 0.0, "skipped"))
            continue
        breaker = _chain_breaker(breaker_for(target))
        policy = policy_for(target)
        attempt_no = 0
        while True:
            if not await breaker.allow():
                state.records.append(AttemptRecord(target, attempt_no, None, "circuit_open", True, 0.0, 0.0, "skipped"))
                state.breaker_wait(breaker.retry_in_s())
                break
            started = clock()
            try:
                result = await attempt(target, attempt_no)
            except GatewayError as err:
                delay = await state.failed(target, attempt_no, err, breaker, policy, rng, clock() - started)
                if delay is None:
                    break
                await sleep(delay)
                attempt_no += 1
                continue
            except BaseException:
                await breaker.release()
                raise
            await breaker.record_success()
            state.records.append(AttemptRecord(target, attempt_no, 200, None, False, 0.0, clock() - started, "ok"))
            return ChainResult(result=result, target=target, attempts=state.records)

    raise _exhausted(state.records, state.last_error, state.answered, state.reopens_in_s)


@dataclass
class _ChainState(Generic[T]):
    """What the chain has learnt so far: the trail, the last error, and whether anyone answered."""

    records: list[AttemptRecord[T]] = field(default_factory=list)
    last_error: GatewayError | None = None
    image_error: UpstreamError | None = None
    answered: bool = False  # did any upstream produce an HTTP answer (or a non-connect failure)?
    reopens_in_s: float | None = None  # the soonest an open breaker of the chain lets a probe through

    def breaker_wait(self, seconds: float) -> None:
        self.reopens_in_s = seconds if self.reopens_in_s is None else min(self.reopens_in_s, seconds)

    async def failed(
        self, target: T, attempt_no: int, err: GatewayError, breaker: ChainBreaker, policy: RetryPolicy,
        rng: random.Random, duration: float,
    ) -> float | None:
        """Record one failed try; the delay before retrying this target, or ``None`` to move on.

        Raises when the failure ends the whole request (our own refusal, or a terminal 4xx).
        """
        if isinstance(err, UpstreamError):
            if _counts_as_failure(err):
                await breaker.record_failure()
            else:
                await breaker.record_success()
            if getattr(err, "kind", None) != "connect":
                self.answered = True
        else:
            await breaker.release()
        retryable = is_retryable(err)
        delay = retry_delay(err, attempt_no, policy, rng)
        if delay is not None and await breaker.state() != "closed":
            delay = None  # this failure tripped the breaker: fail over, don't wait
        self.records.append(
            AttemptRecord(target, attempt_no, _status(err), err.code, retryable, delay or 0.0, duration)
        )
        if isinstance(err, REQUEST_FATAL):
            raise err
        self.last_error = err
        if not isinstance(err, UpstreamError):
            return None  # our own per-route refusal (e.g. the adapter cannot express the request)
        if delay is not None:
            return delay
        if err.image_rejected:
            self.image_error = err
            return None
        if retryable or _is_per_target(err) or not 400 <= err.status < 500:
            return None
        # A terminal 4xx: the request itself is wrong; another route won't fix it.
        raise ChainFailed(
            _public_message(err), attempts=self.records, last_error=err, code=err.code, status=err.status,
        ) from err


def _exhausted(
    records: list[AttemptRecord[Any]], last: GatewayError | None, answered: bool,
    reopens_in_s: float | None = None,
) -> GatewayError:
    tried = sum(1 for r in records if r.outcome != "skipped")
    if not answered and (last is None or isinstance(last, UpstreamError)):
        what = last.message if last is not None else "every route's circuit breaker is open"
        unavailable = ChainUnavailable(
            f"no upstream is available ({tried} tries): {what}", attempts=records, last_error=last
        )
        if reopens_in_s is not None:  # a breaker said when it will try again: tell the client
            unavailable.headers["retry-after"] = str(max(1, math.ceil(reopens_in_s)))
        return unavailable
    if last is None:  # pragma: no cover - answered implies an error was seen
        return ChainFailed("every route failed", attempts=records, last_error=None)
    if not isinstance(last, UpstreamError):
        # Only our own per-route refusals: the client's request is what no route could take.
        return last
    status = 502
    headers: dict[str, str] = {}
    if last.image_rejected:
        status = 400
    elif last.status == 429:
        status = 429
        if last.retry_after_s is not None:
            headers["retry-after"] = str(max(1, math.ceil(last.retry_after_s)))
    return ChainFailed(
        f"every route failed ({tried} tries); last: {_public_message(last)}",
        attempts=records, last_error=last, code=last.code, status=status, headers=headers,
    )
