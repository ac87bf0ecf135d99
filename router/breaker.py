"""Circuit breakers: stop sending to an upstream that keeps failing, then probe it back.

The trip condition is **N consecutive retryable failures** (5xx, 529, timeouts, broken
connections, upstream 429s), not a failure rate over a window: it needs no window tuning, reacts
within N requests to a dead upstream, and a single success in between proves the upstream is
answering. Non-retryable answers (a 400 for a bad image, a 401) count as successes here: the
upstream is up, the request was wrong.

States: ``closed`` → (N failures) → ``open`` (refuse at once) → (cooldown elapsed) →
``half_open`` (exactly one probe allowed) → success: ``closed`` / failure: ``open`` again.
A probe that never reports back (its request was cancelled) frees its slot after another
cooldown, so a breaker cannot stay stuck in half-open.

Pure state machine over an injected clock; all methods are synchronous, so on one event loop
there is no interleaving inside a transition.

Example::

    breakers = BreakerRegistry(failure_threshold=5, cooldown_s=30)
    b = breakers.get("openai:gpt-4o")
    if b.allow():
        ... b.record_success() / b.record_failure()
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """One upstream's breaker (see the module docstring for the state machine)."""

    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if cooldown_s < 0:
            raise ValueError("cooldown_s must be >= 0")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_started: float | None = None
        self.trips = 0  # how many times it opened, for metrics

    @property
    def state(self) -> BreakerState:
        if self._state == "open" and self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def retry_in_s(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self._state != "open":
            return 0.0
        return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """May a request go to this upstream now? In half-open, ``True`` claims the one probe."""
        now = self._clock()
        if self._state == "closed":
            return True
        if self._state == "open":
            if now - self._opened_at < self.cooldown_s:
                return False
            self._state = "half_open"
            self._probe_started = None
        # half_open
        if self._probe_started is not None and now - self._probe_started < max(self.cooldown_s, 1e-9):
            return False
        self._probe_started = now
        return True

    def record_success(self) -> None:
        self._state = "closed"
        self._failures = 0
        self._probe_started = None

    def record_failure(self) -> None:
        self._failures += 1
        if self._state == "half_open" or (
            self._state == "closed" and self._failures >= self.failure_threshold
        ):
            self._trip()

    def release(self) -> None:
        """The request that :meth:`allow` let through ended without a verdict (cancelled, or
        refused by us before reaching the upstream): free the half-open probe slot."""
        if self._state == "half_open":
            self._probe_started = None

    def _trip(self) -> None:
        self._state = "open"
        self._opened_at = self._clock()
        self._probe_started = None
        self.trips += 1


def upstream_key(provider: str, model: str) -> str:
    """The registry key of one upstream: ``provider:model`` (a model can fail alone)."""
    return f"{provider}:{model}"


class BreakerRegistry:
    """One breaker per upstream name, created on first use with that upstream's settings."""

    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(
        self,
        name: str,
        *,
        failure_threshold: int | None = None,
        cooldown_s: float | None = None,
    ) -> CircuitBreaker:
        """The breaker for ``name``; the thresholds apply only when it is first created."""
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = CircuitBreaker(
                failure_threshold or self.failure_threshold,
                self.cooldown_s if cooldown_s is None else cooldown_s,
                self._clock,
            )
            self._breakers[name] = breaker
        return breaker

    def states(self) -> dict[str, BreakerState]:
        """Every known upstream's state, for ``/metrics`` and ``/admin``."""
        return {name: b.state for name, b in sorted(self._breakers.items())}

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __len__(self) -> int:
        return len(self._breakers)
