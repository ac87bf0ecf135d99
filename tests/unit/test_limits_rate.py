from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.errors import RateLimited
from router.keys import Principal
from router.limits import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rpm_limit_refuses_with_retry_after_then_refills() -> None:
    clock = Clock()
    lim = RateLimiter(clock)
    p = Principal("vk_a", "t", rpm=3)
    for _ in range(3):
        lim.check(p)
    with pytest.raises(RateLimited) as info:
        lim.check(p)
    err = info.value
    assert err.status == 429 and err.code == "rate_limit_exceeded"
    assert err.headers["retry-after"] == "20"  # one request refills every 60/3 s
    clock.now += 19.9
    with pytest.raises(RateLimited):
        lim.check(p)
    clock.now += 0.1
    lim.check(p)


def test_tpm_counts_the_callers_token_estimate() -> None:
    clock = Clock()
    lim = RateLimiter(clock)
    p = Principal("vk_b", "t", tpm=6000)
    lim.check(p, tokens=5000)
    with pytest.raises(RateLimited) as info:
        lim.check(p, tokens=1500)
    # 1000 left, 500 more needed at 100 tokens/s.
    assert info.value.headers["retry-after"] == "5"
    assert "tokens" in info.value.message
    lim.check(p, tokens=500)


def test_refused_request_takes_nothing_from_either_bucket() -> None:
    lim = RateLimiter(Clock())
    p = Principal("vk_c", "t", rpm=2, tpm=100)
    with pytest.raises(RateLimited):
        lim.check(p, tokens=101)
    assert lim.remaining(p) == {"requests": 2, "tokens": 100}
    lim.check(p, tokens=100)
    assert lim.remaining(p) == {"requests": 1, "tokens": 0}


def test_request_larger_than_a_minute_has_no_retry_after() -> None:
    lim = RateLimiter(Clock())
    with pytest.raises(RateLimited) as info:
        lim.check(Principal("vk_d", "t", tpm=1000), tokens=5000)
    assert "retry-after" not in info.value.headers
    assert "5000" in info.value.message


def test_keys_are_independent_and_unlimited_keys_pass() -> None:
    lim = RateLimiter(Clock())
    a, b = Principal("vk_1", "t", rpm=1), Principal("vk_2", "t", rpm=1)
    lim.check(a)
    lim.check(b)
    free = Principal("vk_3", "t")
    for _ in range(1000):
        lim.check(free, tokens=10**6)
    assert lim.remaining(free) == {}


def test_adjust_charges_underestimates_and_refunds_overestimates() -> None:
    clock = Clock()
    lim = RateLimiter(clock)
    p = Principal("vk_e", "t", tpm=600)
    lim.check(p, tokens=600)
    lim.adjust(p, -300)  # billed 300 fewer than estimated
    lim.check(p, tokens=300)
    lim.adjust(p, 60)  # billed 60 more: the bucket owes 60, refilled at 10 tokens/s
    with pytest.raises(RateLimited) as info:
        lim.check(p, tokens=0)
    assert info.value.headers["retry-after"] == "6"


def test_changed_limit_takes_effect() -> None:
    lim = RateLimiter(Clock())
    lim.check(Principal("vk_f", "t", rpm=1))
    lim.check(Principal("vk_f", "t", rpm=5))


@settings(deadline=None)
@given(st.integers(1, 600), st.lists(st.tuples(st.floats(0, 30), st.integers(0, 700)), max_size=40))
def test_never_admits_more_than_limit_plus_refill(tpm: int, steps: list[tuple[float, int]]) -> None:
    clock = Clock()
    lim = RateLimiter(clock)
    p = Principal("vk_h", "t", tpm=tpm)
    start = clock.now
    admitted = 0
    for dt, tokens in steps:
        clock.now += dt
        try:
            lim.check(p, tokens)
        except RateLimited as err:
            if tokens <= tpm:
                assert int(err.headers["retry-after"]) >= 1
            continue
        admitted += tokens
    assert admitted <= tpm + (clock.now - start) * tpm / 60 + 1e-6
