"""The exact route choice per bucket: it is the knapsack's optimum, never costlier than a
sampled assignment that the bound accepts, and the search's winner rebuilds identically."""

from __future__ import annotations

import itertools

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.exact import Options, bucket_options, cheapest_routes, pareto_front, with_routes
from optimizer.routes import candidate_routes
from optimizer.run import OptimizeSettings, optimize
from optimizer.search import Matrices, evaluate_bounds, run_search
from optimizer.space import Policy, SearchSpace, assign, build_params, route_params
from optimizer.synthetic import DEFAULT_REPLAY, synthetic_observations
from router.config import load_config
from router.rules import ImageFeatures, RequestFeatures, choose_route


def brute_force(options: Options) -> float:
    """The cheapest total cost over every assignment whose loss fits the budget (inf if none)."""
    n_buckets, n_routes = options.cost.shape
    best = np.inf
    for pick in itertools.product(range(n_routes), repeat=n_buckets):
        rows = np.arange(n_buckets), np.array(pick)
        if options.loss[rows].sum() <= options.slack + 1e-12:
            best = min(best, float(options.cost[rows].sum()))
    return best


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**31 - 1), st.floats(-0.2, 1.5), st.booleans())
def test_pareto_front_finds_the_knapsack_optimum(n_buckets, n_routes, seed, slack, signed):
    rng = np.random.default_rng(seed)
    cost = rng.uniform(0, 1, (n_buckets, n_routes)).round(2)
    loss = rng.uniform(-0.3 if signed else 0.0, 1, (n_buckets, n_routes)).round(2)
    options = Options(cost, loss, slack)
    front = pareto_front(options)
    within = front.loss <= slack + 1e-12
    expected = brute_force(options)
    if np.isinf(expected):
        assert not within.any()
        return
    assert front.cost[within].min() == pytest.approx(expected)
    # Every front member is what its choices add up to, and the front is sorted and non-dominated.
    rows = np.arange(n_buckets)
    for f in range(len(front.cost)):
        assert options.cost[rows, front.choice[f]].sum() == pytest.approx(front.cost[f])
        assert options.loss[rows, front.choice[f]].sum() == pytest.approx(front.loss[f])
    assert (np.diff(front.cost) >= 0).all() and (np.diff(front.loss) < 0).all()


def matrices(seed: int, n: int = 40, n_routes: int = 3, *, draws: bool = False, losses_only: bool = True) -> Matrices:
    rng = np.random.default_rng(seed)
    cost = np.sort(rng.uniform(0.1, 1.0, (n_routes, 1)), axis=0)[::-1] * rng.uniform(0.5, 1.5, (1, n))
    quality = np.clip(rng.normal(0.85, 0.1, (n_routes, n)), 0, 1)
    quality[0] = np.clip(quality[0] + 0.05, 0, 1)  # the expensive route reads best
    permille = np.where(rng.random(n) < 0.1, np.nan, rng.uniform(2, 30, n))
    side = rng.uniform(400, 3000, n)
    k = rng.integers(0, n, 25)
    evidence = (rng.integers(0, n_routes, 25), np.nan_to_num(permille[k], nan=10.0), side[k])
    members = np.clip(quality[None] + rng.normal(0, 0.03, (5, n_routes, n)), 0, 1) if draws else None
    return Matrices(cost, quality, permille, side, members, np.arange(n) if draws else None, current=np.zeros(n, dtype=np.int64),
                    evidence=evidence, unseen_loss=0.25, losses_only=losses_only)


def test_bucket_options_add_up_to_the_bound_without_its_sampling_terms():
    m = matrices(3)
    policy = Policy((8.0, 15.0), (1500.0,), (0,) * 6, 0)
    floor = 0.8
    options = bucket_options(policy, m, floor)
    rows = np.arange(len(policy.route_table))
    for table in np.random.default_rng(0).integers(0, 3, (200, len(rows))):
        cost, _, lower = evaluate_bounds(with_routes(policy, table), m)
        assert options.cost[rows, table].sum() == pytest.approx(cost)
        assert options.slack - options.loss[rows, table].sum() + floor == pytest.approx(lower)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**31 - 1), st.booleans(), st.floats(0.6, 0.95))
def test_exact_choice_is_never_costlier_than_a_sampled_feasible_assignment(seed, draws, floor):
    m = matrices(seed, draws=draws)
    space = SearchSpace.from_data(candidate_routes(load_config("examples/emulated.yaml").models)[:3],
                                  np.nan_to_num(m.text_permille, nan=10.0), m.long_side)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(8):
        sampled = build_params(study.ask(), space)
        cost, _, lower = evaluate_bounds(sampled, m)
        exact, (e_cost, _, e_lower) = cheapest_routes(with_routes(sampled, np.zeros(len(sampled.route_table))), m, floor)
        assert (exact.text_cuts, exact.side_cuts) == (sampled.text_cuts, sampled.side_cuts)
        assert (e_cost, e_lower) == evaluate_bounds(exact, m)[::2]
        if lower >= floor:
            assert e_lower >= floor and e_cost <= cost + 1e-12


def test_exact_search_records_routes_that_rebuild_the_scored_policy():
    m = matrices(5, n=80, draws=True)
    routes = candidate_routes(load_config("examples/emulated.yaml").models)[:3]
    space = SearchSpace.from_data(routes, np.nan_to_num(m.text_permille, nan=10.0), m.long_side)
    base_q = float(m.quality[0].mean())
    result = run_search(space, m, baseline_quality=base_q, baseline_cost=float(m.cost[0].mean()), tolerance=0.02,
                        trials=30, seed=2, choose_routes=cheapest_routes)
    assert result.best is not None and result.best.feasible
    for point in result.points:
        policy = build_params(optuna.trial.FixedTrial(point.params), space)
        cost, quality, lower = evaluate_bounds(policy, m)
        assert (cost, quality, lower) == (point.cost, point.quality, point.quality_lower)
        assert route_params(policy, space).items() <= point.params.items()
    assert result.best.cost <= float(m.cost[0].mean())


def test_optimize_with_exact_routes_emits_the_rules_it_scored():
    catalog = load_config("examples/emulated.yaml").models
    obs = synthetic_observations(catalog, 400, seed=0, replay_routes=DEFAULT_REPLAY)
    p = optimize("unused.duckdb", catalog, OptimizeSettings(tolerance=0.01, trials=40, seed=3, exact_routes=True),
                 observations=obs)
    assert p.savings >= 0.5 and p.predicted_quality >= p.baseline_quality - 0.01
    for row in obs.traffic.head(60).iter_rows(named=True):
        f = RequestFeatures(images=(ImageFeatures(row["width"], row["height"], 1, "png", row["text_height_px"]),))
        target = choose_route(p.ruleset, f).target
        side = float(max(row["width"], row["height"]))
        idx = assign(p.policy, np.array([row["text_height_px"] * 1000.0 / side]), np.array([side]))[0]
        assert f"{target.model}:{target.detail}" == candidate_routes(catalog)[idx].key
