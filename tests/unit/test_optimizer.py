"""The optimizer on synthetic traces whose quality follows the physics the emulator has:
text the model sees below ~7 px is misread, above it is read."""

from __future__ import annotations

from dataclasses import replace
from statistics import NormalDist

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from optimizer.routes import Route, candidate_routes
from optimizer.run import OptimizerError, OptimizeSettings, optimize
from optimizer.space import SearchSpace, assign, build_params, to_ruleset
from optimizer.synthetic import DEFAULT_REPLAY, synthetic_observations
from router.config import load_config
from router.rules import ImageFeatures, RequestFeatures, choose_route


@pytest.fixture(scope="module")
def catalog():
    return load_config("examples/emulated.yaml").models


def synthetic(catalog, n=400, seed=0, replay_routes=()):
    return synthetic_observations(catalog, n, seed=seed, replay_routes=replay_routes)


def test_finds_cheaper_rules_within_tolerance(catalog, tmp_path):
    obs = synthetic(catalog, replay_routes=DEFAULT_REPLAY)
    settings = OptimizeSettings(tolerance=0.01, trials=80, seed=3, storage=f"sqlite:///{tmp_path}/study.db",
                                study_name="t")
    p = optimize("unused.duckdb", catalog, settings, observations=obs, plot_path=tmp_path / "front.png")
    assert p.savings >= 0.5
    assert p.predicted_quality >= p.baseline_quality - 0.01
    assert p.quality_interval[0] <= p.predicted_quality <= p.quality_interval[1]
    assert (tmp_path / "front.png").stat().st_size > 1000
    assert p.search.pareto() and p.tradeoff.apgr > 0
    # The emitted rules route exactly as the search assumed.
    traffic = obs.traffic
    for row in traffic.head(60).iter_rows(named=True):
        f = RequestFeatures(images=(ImageFeatures(row["width"], row["height"], 1, "png", row["text_height_px"]),))
        target = choose_route(p.ruleset, f).target
        long_side = float(max(row["width"], row["height"]))
        idx = assign(p.policy, np.array([row["text_height_px"] * 1000.0 / long_side]), np.array([long_side]))[0]
        space_route = p.policy.bucket_routes  # noqa: F841 - kept for readability of the failure
        assert Route(target.model, target.detail).key == candidate_routes(catalog)[idx].key
    # Resumable: the same study continues in the same storage.
    again = optimize("unused.duckdb", catalog, replace(settings, trials=90), observations=obs)
    assert len(again.search.points) == 90


def test_fixed_trial_rebuilds_the_same_policy(catalog):
    routes = candidate_routes(catalog)
    space = SearchSpace.from_data(routes, np.array([8.0, 12, 20, 32]), np.array([400.0, 800, 1600, 2400]))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    policy = build_params(trial, space)
    assert build_params(optuna.trial.FixedTrial(trial.params), space) == policy
    assert to_ruleset(policy, space, name="x").default.route.model in catalog


def test_refuses_without_data_for_other_routes(catalog):
    with pytest.raises(OptimizerError, match="exploration|replay"):
        optimize("unused.duckdb", catalog, OptimizeSettings(trials=5), observations=synthetic(catalog))


def test_refuses_too_little_data(catalog):
    with pytest.raises(OptimizerError, match="too little data"):
        optimize("unused.duckdb", catalog, OptimizeSettings(trials=5), observations=synthetic(catalog, n=10))


def test_refuses_single_model_catalog(catalog):
    with pytest.raises(OptimizerError, match="single model"):
        optimize("unused.duckdb", {"gpt-4o": catalog["gpt-4o"]}, OptimizeSettings(trials=5),
                 observations=synthetic(catalog))


def test_observed_scores_replace_predictions_where_measured():
    import polars as pl

    from optimizer.anchoring import anchor_observed

    routes = [Route("gpt-4o", "high"), Route("gpt-4.1-mini", "low")]
    quality = np.full((2, 3), 0.5)
    traffic = pl.DataFrame({"sha256": ["a", "b", "c"], "task": ["transcribe"] * 3})
    scored = pl.DataFrame({
        "sha256": ["a", "a", "a", "b", None], "task": ["transcribe", "transcribe", "transcribe", "extract", "transcribe"],
        "route": ["gpt-4o:high", "gpt-4.1-mini:low", "gpt-4.1-mini:low", "gpt-4o:high", "gpt-4o:high"],
        "quality": [0.9, 0.2, 0.4, 0.1, 0.0],
    })
    assert anchor_observed(quality, traffic, scored, routes) == 2
    assert quality[:, 0].tolist() == pytest.approx([0.9, 0.3])  # mean of two observations
    assert quality[:, 1].tolist() == [0.5, 0.5]  # observed for another task only
    assert quality[:, 2].tolist() == [0.5, 0.5]


def test_anchoring_keeps_what_is_particular_to_the_image():
    from optimizer.anchoring import anchor_to_taken

    # Model: route 0 reads at 0.9, route 1 at 0.6. The image measured 0.5 on route 0 (a hard page).
    q = np.array([[0.9, 0.9, 0.9], [0.6, 0.6, 0.6]])
    taken = np.array([0, 1, -1])
    measured = np.array([0.5, 1.0, 0.7])
    out = anchor_to_taken(q, taken, measured)
    assert out[:, 0].tolist() == pytest.approx([0.5, 0.2])  # the model's difference, from the measured level
    assert out[:, 1].tolist() == pytest.approx([1.0, 1.0])  # clipped at 1
    assert out[:, 2].tolist() == pytest.approx([0.9, 0.6])  # route unknown: prediction as is
    draws = np.stack([q, q - 0.1])
    assert anchor_to_taken(draws, taken, measured)[1, :, 0].tolist() == pytest.approx([0.5, 0.2])


def test_lower_bound_is_the_point_where_nothing_is_predicted():
    from optimizer.search import Matrices, evaluate_bounds
    from optimizer.space import Policy

    cost = np.array([[1.0, 1.0], [0.1, 0.1]])
    quality = np.array([[0.9, 0.8], [0.85, 0.8]])
    # Members agree on route 0 (measured), scatter on route 1.
    draws = np.stack([quality, quality + [[0, 0], [-0.2, -0.2]], quality + [[0, 0], [0.1, 0.1]]])
    m = Matrices(cost, quality, np.array([10.0, 20.0]), np.array([800.0, 800.0]), draws, np.arange(2), confidence=0.9,
                 current=np.array([0, 0]))
    keep = Policy((), (), (0,), 0)
    move = Policy((), (), (1,), 1)
    assert evaluate_bounds(keep, m) == pytest.approx((1.0, 0.85, 0.85))
    c, q, lower = evaluate_bounds(move, m)
    assert (c, q) == pytest.approx((0.1, 0.825)) and lower < q - 0.05


def test_a_predicted_gain_in_one_bucket_pays_for_a_loss_in_another_unless_losses_only():
    from optimizer.search import Matrices, evaluate_bounds
    from optimizer.space import Policy

    # Two buckets (text < 15 px, ≥ 15 px). Route 1 is predicted +0.2 on big text, −0.1 on small.
    cost = np.array([[1.0, 1.0], [0.1, 0.1]])
    quality = np.array([[0.8, 0.8], [0.7, 1.0]])
    both = Policy((15.0,), (), (1, 1), 0)
    m = Matrices(cost, quality, np.array([10.0, 20.0]), np.array([800.0, 800.0]), current=np.array([0, 0]),
                 confidence=0.5)  # z = 0: no sampling term
    assert evaluate_bounds(both, m) == pytest.approx((0.1, 0.85, 0.85))  # the mean: 0.8 + (−0.1 + 0.2) / 2
    # At 90 %, the paired change's sampling error on two images comes off: 1.2816 × sd / √2.
    sure = replace(m, confidence=0.9)
    assert evaluate_bounds(both, sure)[2] == pytest.approx(0.85 - NormalDist().inv_cdf(0.9) * np.std([-0.1, 0.2], ddof=1) / np.sqrt(2))
    strict = Matrices(cost, quality, np.array([10.0, 20.0]), np.array([800.0, 800.0]), current=np.array([0, 0]),
                      losses_only=True)
    c, q, lower = evaluate_bounds(both, strict)
    assert q == pytest.approx(0.85)  # the point prediction counts the gain...
    assert lower == pytest.approx(0.75)  # ...the per-bucket constraint does not: 0.8 + (−0.1 + 0) / 2


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 12).flatmap(lambda n: st.tuples(
    arrays(np.float64, (3, n), elements=st.floats(0, 1)), arrays(np.float64, (n,), elements=st.floats(1, 60)),
    st.lists(st.integers(0, 2), min_size=3, max_size=3), st.floats(1, 60))))
def test_overall_bound_is_the_mean_change_less_its_sampling_error(case):
    from optimizer.search import Matrices, evaluate_bounds
    from optimizer.space import Policy

    quality, text, routes, cut = case
    n = quality.shape[1]
    cost = np.ones_like(quality)
    current = np.zeros(n, dtype=int)
    policy = Policy((cut,), (), (routes[0], routes[1]), routes[2])
    loose = Matrices(cost, quality, text, np.full(n, 800.0), current=current)
    strict = Matrices(cost, quality, text, np.full(n, 800.0), current=current, losses_only=True)
    _, q, lower = evaluate_bounds(policy, loose)
    change = quality[assign(policy, text, np.full(n, 800.0)), np.arange(n)] - quality[0]
    # No draws, no allowance: the predicted mean less its one-sided sampling error at 90 %.
    assert lower == pytest.approx(q - NormalDist().inv_cdf(0.9) * change.std(ddof=1) / np.sqrt(n), abs=1e-9)
    at_half = evaluate_bounds(policy, Matrices(cost, quality, text, np.full(n, 800.0), current=current, confidence=0.5))
    assert at_half[2] == pytest.approx(q, abs=1e-9) and at_half[2] >= evaluate_bounds(policy, strict)[2] - 1e-12


def test_policy_that_splits_a_task_routes_it_apart_in_the_matrices_and_the_rules(catalog):
    from optimizer.search import Matrices, evaluate_bounds
    from optimizer.space import Policy
    from router.rules import ImageFeatures, RequestFeatures, choose_route

    routes = candidate_routes(catalog)
    space = SearchSpace.from_data(routes, np.array([8.0, 12, 20, 32]), np.array([400.0, 800, 1600, 2400]),
                                  task=np.array(["transcribe", "extract", "describe", "extract"]))
    assert space.tasks == ("describe", "extract")  # the default task is never split off: unnamed requests carry it
    policy = Policy((15.0,), (), (0, 1), 2, task="extract", task_cuts=(25.0,), task_routes=(3, 4))
    text, side = np.array([10.0, 10.0, 30.0, np.nan]), np.full(4, 800.0)
    task = np.array(["transcribe", "extract", "extract", "extract"])
    chosen = assign(policy, text, side, task)
    assert chosen.tolist() == [0, 3, 4, 2]  # no text estimate: the unknown-text route, as the rules do
    assert assign(policy, text, side).tolist() == [0, 0, 1, 2]  # without tasks the split is not applied
    ruleset = to_ruleset(policy, space, name="x")
    for k in range(4):
        th = None if np.isnan(text[k]) else float(text[k]) * 0.8  # ‰ of 800 px → px
        features = RequestFeatures(images=(ImageFeatures(800, 600, 0, "png", th),), task=str(task[k]))
        target = choose_route(ruleset, features).target
        assert (target.model, target.detail) == (routes[chosen[k]].model, routes[chosen[k]].detail)
    # The matrices see the split: moving only the extraction images changes only their cost.
    cost = np.tile(np.arange(len(routes), dtype=float)[:, None] + 1.0, (1, 4))
    m = Matrices(cost, np.full((len(routes), 4), 0.9), text, side, task=task, current=np.zeros(4, dtype=int))
    assert evaluate_bounds(policy, m)[0] == pytest.approx(np.mean(cost[chosen, np.arange(4)]))


def test_task_split_is_a_parameter_the_fixed_trial_rebuilds(catalog):
    routes = candidate_routes(catalog)
    space = SearchSpace.from_data(routes, np.array([8.0, 12, 20, 32]), np.array([400.0, 800, 1600, 2400]),
                                  task=np.array(["transcribe", "extract", "transcribe", "extract"]))
    params = {"n_text_cuts": 0, "n_side_cuts": 0, "route_0": routes[0].key, "route_unknown_text": routes[0].key,
              "task_split": "extract", "n_task_cuts": 1, "task_cut_0": 1, "task_route_0": routes[1].key,
              "task_route_1": routes[2].key}
    policy = build_params(optuna.trial.FixedTrial(params), space)
    assert (policy.task, policy.task_cuts, policy.task_routes) == ("extract", (space.text_grid[1],), (1, 2))
    none = build_params(optuna.trial.FixedTrial({**params, "task_split": "none"}), space)
    assert none.task is None and none.task_routes == ()
    one_task = SearchSpace.from_data(routes, np.array([8.0, 12]), np.array([400.0, 800]), task=np.array(["x", "x"]))
    assert one_task.tasks == ()


def test_moves_backed_by_few_observations_are_charged_for_what_they_could_hide():
    from optimizer.search import Matrices, evaluate_bounds
    from optimizer.space import Policy

    cost = np.array([[1.0, 1.0], [0.1, 0.1]])
    quality = np.array([[0.9, 0.9], [0.9, 0.9]])  # predicted equal: only the allowance differs
    move = Policy((), (), (1,), 1)

    def lower(k: int) -> float:
        evidence = (np.ones(k, dtype=int), np.full(k, 10.0), np.full(k, 800.0))
        m = Matrices(cost, quality, np.array([10.0, 20.0]), np.array([800.0, 800.0]), current=np.array([0, 0]),
                     evidence=evidence, unseen_loss=0.25)
        return evaluate_bounds(move, m)[2]

    assert lower(0) == pytest.approx(0.9 - 0.25)  # never seen on that route: a failure rate up to 1
    assert lower(9) == pytest.approx(0.9 - 0.025)  # ten observations: up to about a tenth
    assert evaluate_bounds(Policy((), (), (0,), 0), Matrices(cost, quality, np.array([10.0, 20.0]), np.array([800.0, 800.0]),
                           current=np.array([0, 0]), evidence=(np.zeros(0, dtype=int), np.zeros(0), np.zeros(0)),
                           unseen_loss=0.25))[2] == pytest.approx(0.9)  # staying put costs nothing
