"""Gateway shadows: chosen independently of the outcome, bounded in flight and in money."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from router.rollout.split import assign_arm
from router.shadow import ShadowBudget, ShadowSender, chosen


@given(st.text(min_size=1, max_size=40), st.floats(0.0, 1.0))
def test_the_choice_is_a_pure_function_of_the_request(request_id: str, fraction: float) -> None:
    assert chosen(request_id, fraction) == chosen(request_id, fraction)
    assert not chosen(request_id, 0.0) and chosen(request_id, 1.0)


def test_the_share_shadowed_follows_the_fraction_and_is_independent_of_the_arm() -> None:
    ids = [f"req-{i}" for i in range(20000)]
    picked = [chosen(i, 0.3) for i in ids]
    assert abs(sum(picked) / len(ids) - 0.3) < 0.015
    canary = [assign_arm(i, 0.5, 0.0) == "canary" for i in ids]
    in_canary = [p for p, c in zip(picked, canary, strict=True) if c]
    assert abs(sum(in_canary) / len(in_canary) - 0.3) < 0.02  # the arm hash does not bias the choice


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 23, 0)

    def __call__(self) -> datetime:
        return self.now


def test_the_budget_never_hands_out_more_than_the_cap_and_rolls_over_at_midnight() -> None:
    clock = Clock()
    budget = ShadowBudget(cap_usd=1.0, clock=clock)
    grants = [budget.reserve(0.3) for _ in range(5)]
    assert grants[:3] == [0.3, 0.3, 0.3] and abs(grants[3] - 0.1) < 1e-12 and grants[4] == 0.0
    for g in grants:
        budget.settle(g, g / 2)
    assert abs(budget.spent_usd - 0.5) < 1e-12 and budget.reserved_usd == 0.0
    clock.now += timedelta(hours=2)
    assert budget.left() == 1.0


@settings(max_examples=50)
@given(st.lists(st.floats(0.0, 0.5), min_size=1, max_size=30), st.floats(0.01, 2.0))
def test_spent_never_exceeds_the_cap_when_shadows_cost_at_most_their_grant(costs: list[float], cap: float) -> None:
    budget = ShadowBudget(cap_usd=cap, clock=Clock())
    for cost in costs:
        granted = budget.reserve(0.25)
        budget.settle(granted, min(cost, granted))  # the gateway refuses a shadow priced above its cap
    assert budget.spent_usd <= cap + 1e-9


async def test_the_sender_skips_when_busy_or_out_of_money_and_never_raises() -> None:
    sender = ShadowSender(ShadowBudget(cap_usd=0.25, clock=Clock()), max_in_flight=2)
    release = asyncio.Event()
    seen: list[float] = []

    async def run(cap: float) -> float:
        seen.append(cap)
        await release.wait()
        return cap / 2

    assert sender.submit(run, 0.1) and sender.submit(run, 0.1)
    assert not sender.submit(run, 0.1) and sender.stats.skipped_busy == 1
    release.set()
    await sender.drain()
    assert sender.stats.sent == 2 and abs(sender.budget.spent_usd - 0.1) < 1e-12

    async def boom(cap: float) -> float:
        raise RuntimeError("upstream down")

    assert sender.submit(boom, 0.1)
    await sender.drain()
    assert sender.stats.failed == 1
    assert sender.budget.left() == 0.15  # a failed shadow gives its grant back
    assert sender.submit(run, 0.2)  # granted the 0.15 left, no more
    assert sender.budget.left() == 0.0
    assert not sender.submit(run, 0.2) and sender.stats.skipped_budget == 1
    await sender.drain()
    assert seen[-1] == 0.15 and sender.budget.spent_usd <= 0.25


async def test_admits_forecasts_money_for_a_shadow_like_the_cheapest_recent_one() -> None:
    clock = Clock()
    sender = ShadowSender(ShadowBudget(cap_usd=0.8, clock=clock), max_in_flight=2)
    assert sender.admits() and sender.per_shadow_usd() == 0.4  # no shadow priced yet: any money will do
    sender.priced(0.3)
    assert sender.admits()
    release = asyncio.Event()

    async def run(cap: float) -> float:
        await release.wait()
        return 0.3

    assert sender.submit(run, 0.05) and sender.submit(run, 0.05)
    assert sender.admits()  # both slots busy, but busy slots are not forecast: only money is
    release.set()
    await sender.drain()
    assert abs(sender.budget.left() - 0.2) < 1e-12
    assert not sender.admits()  # a slot's share (0.10) is below the shadows' price (0.30)
    sender.divert()
    assert sender.stats.diverted == 1
    sender.priced(0.05)  # one cheap shadow among the recent ones: one dear image does not hold the canary
    assert sender.admits()
    sender.recent_estimates.extend([0.3] * 16)  # sixteen dear ones in a row are what shadows cost now
    assert not sender.admits()
    clock.now += timedelta(hours=2)  # a new UTC day: the cap is whole again
    assert sender.admits()


def test_a_cap_that_could_never_pay_for_a_shadow_does_not_hold_the_canary() -> None:
    sender = ShadowSender(ShadowBudget(cap_usd=0.4, clock=Clock()), max_in_flight=8)
    sender.priced(0.1)  # a whole day's share (0.05) is below one shadow: pairs are out of reach at any hour
    assert sender.admits()
