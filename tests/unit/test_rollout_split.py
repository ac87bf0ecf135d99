from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.rollout.split import assign_arm, split_key, unit_hash


@given(st.text(max_size=40), st.floats(0, 1), st.floats(0, 1))
def test_assignment_is_deterministic(key: str, canary: float, explore: float) -> None:
    explore = min(explore, 1 - canary)
    assert assign_arm(key, canary, explore) == assign_arm(key, canary, explore)
    assert 0.0 <= unit_hash(key) < 1.0


@settings(max_examples=25, deadline=None)
@given(st.floats(0, 0.5), st.floats(0, 0.3), st.text(max_size=8))
def test_fractions_hold_over_many_keys(canary: float, explore: float, salt: str) -> None:
    n = 20_000
    arms = [assign_arm(f"req-{i}", canary, explore, salt=salt) for i in range(n)]
    # Binomial tolerance: 5 standard deviations plus a little.
    for arm, frac in (("canary", canary), ("explore", explore)):
        sd = (frac * (1 - frac) / n) ** 0.5
        assert abs(arms.count(arm) / n - frac) <= 5 * sd + 1e-3


@given(st.text(max_size=20), st.floats(0, 1), st.floats(0, 1))
def test_raising_the_canary_only_moves_keys_into_it(key: str, a: float, b: float) -> None:
    low, high = sorted((a, b))
    if assign_arm(key, low) == "canary":
        assert assign_arm(key, high) == "canary"


def test_zero_and_full_fractions() -> None:
    keys = [f"k{i}" for i in range(500)]
    assert {assign_arm(k, 0.0) for k in keys} == {"active"}
    assert {assign_arm(k, 1.0) for k in keys} == {"canary"}
    assert {assign_arm(k, 0.0, 1.0) for k in keys} == {"explore"}


def test_salt_gives_each_rollout_its_own_population() -> None:
    keys = [f"user-{i}" for i in range(4000)]
    first = {k for k in keys if assign_arm(k, 0.1, salt="v0002") == "canary"}
    second = {k for k in keys if assign_arm(k, 0.1, salt="v0003") == "canary"}
    assert len(first & second) < 0.5 * len(first)


@pytest.mark.parametrize("canary,explore", [(-0.1, 0.0), (1.1, 0.0), (0.7, 0.4), (0.2, -0.1)])
def test_bad_fractions_are_refused(canary: float, explore: float) -> None:
    with pytest.raises(ValueError):
        assign_arm("k", canary, explore)


def test_sticky_keys() -> None:
    assert split_key("r1") == "req:r1"
    assert split_key("r1", team="t", user="u", sticky=True) == "user:u"
    assert split_key("r1", team="t", sticky=True) == "team:t"
    assert split_key("r1", sticky=True) == "req:r1"
    same = {assign_arm(split_key(f"r{i}", user="u", sticky=True), 0.5) for i in range(50)}
    assert len(same) == 1
