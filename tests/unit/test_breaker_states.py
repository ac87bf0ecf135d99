from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.breaker import BreakerRegistry, CircuitBreaker, upstream_key


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_trips_after_consecutive_failures_and_recovers() -> None:
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        assert b.allow()
        b.record_failure()
    assert b.state == "closed"
    assert b.allow()
    b.record_failure()
    assert b.state == "open" and b.trips == 1
    assert not b.allow()
    assert b.retry_in_s() == pytest.approx(10)

    clock.now += 9.9
    assert not b.allow()
    clock.now += 0.1
    assert b.state == "half_open"
    assert b.allow()  # the probe
    assert not b.allow()  # only one probe at a time
    b.record_success()
    assert b.state == "closed" and b.consecutive_failures == 0
    assert b.allow()


def test_success_resets_the_consecutive_count() -> None:
    b = CircuitBreaker(failure_threshold=2, cooldown_s=5, clock=FakeClock())
    b.record_failure()
    b.record_success()
    b.record_failure()
    assert b.state == "closed"
    b.record_failure()
    assert b.state == "open"


def test_failed_probe_reopens_for_a_full_cooldown() -> None:
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=1, cooldown_s=10, clock=clock)
    b.record_failure()
    clock.now += 10
    assert b.allow()
    b.record_failure()
    assert b.state == "open" and b.trips == 2
    clock.now += 5
    assert not b.allow()
    clock.now += 5
    assert b.allow()


def test_released_or_abandoned_probe_frees_the_slot() -> None:
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=1, cooldown_s=10, clock=clock)
    b.record_failure()
    clock.now += 10
    assert b.allow()
    b.release()
    assert b.allow()  # released: another probe may go
    clock.now += 10  # that probe never reported back
    assert b.allow()


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker(cooldown_s=-1)


def test_registry_keys_by_upstream_and_keeps_first_settings() -> None:
    clock = FakeClock()
    reg = BreakerRegistry(failure_threshold=5, cooldown_s=30, clock=clock)
    a = reg.get(upstream_key("openai", "gpt-4o"), failure_threshold=1, cooldown_s=2)
    assert reg.get("openai:gpt-4o") is a
    assert a.failure_threshold == 1 and a.cooldown_s == 2
    other = reg.get("anthropic:claude")
    assert other.failure_threshold == 5
    a.record_failure()
    assert reg.states() == {"anthropic:claude": "closed", "openai:gpt-4o": "open"}
    assert "openai:gpt-4o" in reg and len(reg) == 2


@settings(deadline=None)
@given(st.lists(st.sampled_from(["ok", "fail", "tick", "allow"]), max_size=60), st.integers(1, 5))
def test_never_allows_while_open_before_cooldown(ops: list[str], threshold: int) -> None:
    clock = FakeClock()
    b = CircuitBreaker(failure_threshold=threshold, cooldown_s=10, clock=clock)
    for op in ops:
        if op == "ok":
            b.record_success()
        elif op == "fail":
            b.record_failure()
        elif op == "tick":
            clock.now += 3
        else:
            was_open = b.state == "open"
            allowed = b.allow()
            if was_open:
                assert not allowed
        assert b.state in ("closed", "open", "half_open")
        assert b.consecutive_failures >= 0
