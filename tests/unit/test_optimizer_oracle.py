"""The oracle: cheapest rules over the router's features within the tolerance."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.oracle import apply_rules, cheapest_choice, held_out_reference, margin_for, oracle

TASKS = np.array(["transcribe"] * 8)


def test_flat_quality_sends_everything_to_the_cheapest_route():
    cost = np.array([[3.0] * 8, [1.0] * 8, [2.0] * 8])
    quality = np.ones((3, 8))
    r = oracle(cost, quality, np.linspace(5, 40, 8), np.full(8, 1000.0), TASKS, 0, 0.01)
    assert set(r.assignment.tolist()) == {1} and abs(r.cost_cut - 2 / 3) < 1e-9


def test_content_decides_when_the_cheap_route_fails_on_small_text():
    permille = np.array([4, 5, 6, 7, 30, 32, 34, 36], dtype=float)
    cost = np.array([[3.0] * 8, [1.0] * 8])
    quality = np.array([[1.0] * 8, [0.2] * 4 + [1.0] * 4])
    r = oracle(cost, quality, permille, np.full(8, 1000.0), TASKS, 0, 0.01)
    assert r.assignment.tolist() == [0] * 4 + [1] * 4
    assert r.quality >= r.baseline_quality - 0.01 and r.routes_used() == {0, 1}


def test_the_task_can_split_buckets():
    task = np.array(["extract", "describe"] * 4)
    cost = np.array([[3.0] * 8, [1.0] * 8])
    quality = np.array([[1.0] * 8, [0.0, 1.0] * 4])
    same = np.full(8, 10.0)
    plain = oracle(cost, quality, same, np.full(8, 1000.0), task, 0, 0.01)
    tasked = oracle(cost, quality, same, np.full(8, 1000.0), task, 0, 0.01, by_task=True)
    assert plain.cost_cut == 0.0 and tasked.cost_cut > 0.3


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(2, 3), st.integers(0, 10_000))
def test_cheapest_choice_meets_the_floor_and_matches_brute_force(n_b, n_r, seed):
    rng = np.random.default_rng(seed)
    cost, qual = rng.uniform(0, 1, (n_b, n_r)), rng.uniform(0, 1, (n_b, n_r))
    floor = float(qual.max(axis=1).sum()) * 0.8
    choice = cheapest_choice(cost, qual, floor)
    assert choice is not None
    rows = np.arange(n_b)
    assert qual[rows, choice].sum() >= floor - 1e-9
    best = min(cost[rows, list(c)].sum() for c in np.ndindex(*([n_r] * n_b)) if qual[rows, list(c)].sum() >= floor - 1e-9)
    assert abs(cost[rows, choice].sum() - best) < 1e-9


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000))
def test_the_task_split_never_finds_less(seed):
    rng = np.random.default_rng(seed)
    n = 24
    cost = np.vstack([np.full(n, 3.0), rng.uniform(0.5, 1.5, n), rng.uniform(0.1, 0.5, n)])
    quality = np.vstack([np.ones(n), rng.uniform(0.6, 1.0, n), rng.uniform(0.3, 1.0, n)])
    task = rng.choice(["transcribe", "extract", "describe"], n)
    args = (cost, quality, rng.uniform(2, 40, n), rng.choice([800.0, 1600.0], n), task, 0, 0.02)
    plain, tasked = oracle(*args), oracle(*args, by_task=True)
    assert tasked.cost <= plain.cost + 1e-12
    assert tasked.quality >= tasked.baseline_quality - 0.02 - 1e-9


def test_rules_carried_to_other_images_follow_the_cuts():
    permille = np.array([4, 5, 6, 7, 30, 32, 34, 36], dtype=float)
    side = np.full(8, 1000.0)
    cost = np.array([[3.0] * 8, [1.0] * 8])
    quality = np.array([[1.0] * 8, [0.2] * 4 + [1.0] * 4])
    r = oracle(cost, quality, permille, side, TASKS, 0, 0.01)
    assert apply_rules(r, permille, side, (permille, side), 0).tolist() == r.assignment.tolist()
    other = np.array([3.0, 40.0, np.nan])  # small text, large text, no estimate
    carried = apply_rules(r, other, np.full(3, 900.0), (permille, side), 0).tolist()
    assert carried[:2] == [0, 1]
    assert carried[2] == 0  # a cell no chosen-on image fell in keeps the baseline


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000))
def test_rules_applied_to_their_own_images_give_the_oracles_assignment(seed):
    rng = np.random.default_rng(seed)
    n = 24
    permille = np.where(rng.random(n) < 0.1, np.nan, rng.uniform(2, 40, n))
    side = rng.choice([512.0, 1024.0, 2048.0], n)
    cost = np.stack([np.full(n, 3.0), np.full(n, 1.0), np.full(n, 0.5)])
    quality = np.clip(rng.normal(0.8, 0.2, (3, n)), 0, 1)
    r = oracle(cost, quality, permille, side, np.array(["t"] * n), 0, 0.02)
    assert apply_rules(r, permille, side, (permille, side), 0).tolist() == r.assignment.tolist()


def test_the_reference_held_out_keeps_the_flat_worlds_cut_with_no_margin():
    n = 16
    cost = np.array([[3.0] * n, [1.0] * n, [2.0] * n])
    args = (cost, np.ones((3, n)), np.linspace(5, 40, n), np.full(n, 1000.0), np.array(["t"] * n), 0, 0.01)
    chosen, margins = held_out_reference(*args)
    assert margins == (0.0, 0.0)
    assert chosen.tolist() == [1] * n


def test_no_margin_holds_when_a_routes_gain_on_one_half_is_a_loss_on_the_other():
    # One bucket; the cheap route is perfect on the even images and useless on the odd ones, so
    # whatever margin it is chosen at on one half, it loses half the quality on the other.
    n = 12
    cost = np.array([[3.0] * n, [1.0] * n])
    quality = np.array([[0.5] * n, [1.0, 0.0] * (n // 2)])
    args = (cost, quality, np.full(n, 10.0), np.full(n, 1000.0), np.array(["t"] * n), 0, 0.01)
    assert margin_for(*args) is None
    assert oracle(*args).cost_cut > 0  # in hindsight, the even images alone look like savings


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(0, 23))
def test_no_image_is_routed_by_its_own_answers(seed, image):
    rng = np.random.default_rng(seed)
    n = 24
    permille, side = rng.uniform(2, 40, n), rng.choice([512.0, 1024.0], n)
    cost = np.stack([np.full(n, 3.0), np.full(n, 1.0), np.full(n, 0.5)])
    quality = np.clip(rng.normal(0.85, 0.2, (3, n)), 0, 1)
    task = np.array(["t"] * n)
    chosen, _ = held_out_reference(cost, quality, permille, side, task, 0, 0.02)
    changed = quality.copy()
    changed[1:, image] = 1.0 - changed[1:, image]  # this image's answers on the cheaper routes
    again, _ = held_out_reference(cost, changed, permille, side, task, 0, 0.02)
    assert again[image] == chosen[image]
