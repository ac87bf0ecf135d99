"""``aperture optimize``: from traces and scores to a proposed ruleset, or a clear refusal.

Steps: load scored requests → candidate routes from the catalog → exact cost matrix over the
logged images → quality model fitted on every scored (image, route) pair → Optuna search with
the constraint quality ≥ baseline − tolerance → the winner rebuilt from its params by the same
function → a ruleset with provenance, predicted cost and quality (with an interval).

The optimizer refuses (``OptimizerError``) rather than propose a silently worse ruleset: too
little data, no exploration or replay data (so no route other than the logged one was ever
observed), or a catalog with a single model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import polars as pl

from optimizer import ope
from optimizer.data import Observations, load_observations
from optimizer.quality import ImageTable, QualityModel, fit_quality_model
from optimizer.report import TradeOff, plot_front, trade_off
from optimizer.routes import (
    Route,
    assigned_costs,
    candidate_routes,
    effective_scale_matrix,
    image_tokens_matrix,
    route_costs,
)
from optimizer.search import Matrices, SearchResult, evaluate_bounds, run_search
from optimizer.space import Policy, SearchSpace, assign, build_params, to_ruleset
from router.rules import Ruleset, Target, dump_ruleset


class OptimizerError(Exception):
    """The data cannot support a proposal; the message says what is missing."""


@dataclass
class Proposal:
    ruleset: Ruleset
    text: str
    policy: Policy
    predicted_cost: float  # mean USD per request on the logged traffic
    predicted_quality: float
    quality_interval: tuple[float, float]
    baseline_cost: float
    baseline_quality: float
    observed_baseline_quality: float
    savings: float  # 1 − predicted/baseline
    search: SearchResult
    tradeoff: TradeOff
    off_policy: ope.OffPolicyEstimate | None
    route_share: dict[str, float]
    provenance: dict[str, Any] = field(default_factory=dict)
    plot: Path | None = None


def _image_table(df: pl.DataFrame) -> ImageTable:
    return ImageTable(
        width=df["width"].to_numpy().astype(np.int64),
        height=df["height"].to_numpy().astype(np.int64),
        text_height=df["text_height_px"].cast(pl.Float64).fill_null(float("nan")).to_numpy(),
        task=df["task"].to_numpy().astype(str),
    )


def _route_index(keys: Sequence[str], routes: Sequence[Route]) -> np.ndarray:
    index = {r.key: i for i, r in enumerate(routes)}
    return np.array([index.get(Route.parse(k).key, -1) for k in keys], dtype=np.int64)


def optimize(
    db: str | Path,
    catalog: Mapping[str, Any],
    *,
    tolerance: float = 0.01,
    trials: int = 300,
    seed: int = 0,
    storage: str | None = None,
    study_name: str | None = None,
    since: datetime | None = None,
    models: Sequence[str] | None = None,
    min_scored: int = 40,
    min_routes_observed: int = 2,
    fallback: Target | None = None,
    plot_path: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    observations: Observations | None = None,
    confidence: float = 0.9,
    unseen_loss: float = 0.25,
    max_bound_images: int = 5000,
) -> Proposal:
    obs = observations or load_observations(db, since=since)
    routes = candidate_routes(catalog, models)
    if len({r.model for r in routes}) < 2:
        raise OptimizerError("the catalog offers a single model: there is nothing to route between (add a second model)")
    scored = obs.scored
    traffic = obs.traffic
    if scored.height < min_scored:
        raise OptimizerError(
            f"too little data: {scored.height} scored requests, at least {min_scored} are needed "
            "(send traffic through the gateway, then run `aperture eval`)"
        )
    if traffic.height == 0:
        raise OptimizerError("no user traffic in the window: nothing to optimise over")
    obs_routes = _route_index(scored["route"].to_list(), routes)
    known = obs_routes >= 0
    observed_keys = {routes[i].key for i in set(obs_routes[known].tolist())}
    if len(observed_keys) < min_routes_observed:
        raise OptimizerError(
            f"only {sorted(observed_keys) or 'no candidate route'} observed: quality of other routes is unknown. "
            "Turn on exploration (routing.explore_fraction) or run `aperture replay`, then `aperture eval`."
        )

    # Quality model on every scored (image, route) pair, with a bootstrap ensemble over images.
    train = scored.filter(pl.Series(known))
    train_images = _image_table(train)
    train_scale = effective_scale_matrix(catalog, routes, train_images.width, train_images.height)
    qmodel: QualityModel = fit_quality_model(
        train_images, obs_routes[known], train["quality"].to_numpy(), routes, train_scale,
        groups=_image_ids(train), seed=seed,
    )

    # Predicted quality of every route on every logged image, anchored to what was measured:
    # the image's own score on the route it took, plus the model's difference between routes;
    # the measured score itself wherever the image was sent on a route (its request or a replay).
    images = _image_table(traffic)
    long_side = np.maximum(images.width, images.height).astype(float)
    permille = images.text_height * 1000.0 / np.maximum(long_side, 1.0)
    scale = effective_scale_matrix(catalog, routes, images.width, images.height)
    taken = _route_index(traffic["route"].to_list(), routes)
    measured_q = traffic["quality"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    cells = observed_cells(traffic, scored, routes)
    quality = anchor_to_taken(qmodel.predict_matrix(images, scale), taken, measured_q)
    anchored = _apply_cells(quality, cells)
    rng = np.random.default_rng(seed)
    subset = np.sort(rng.choice(len(traffic), min(len(traffic), max_bound_images), replace=False))
    draws = anchor_to_taken(qmodel.predict_draws(_take(images, subset), scale[:, subset]), taken[subset], measured_q[subset])
    position = {int(i): k for k, i in enumerate(subset)}
    _apply_cells(draws, [(r, position[i], q) for r, i, q in cells if i in position])
    tokens = image_tokens_matrix(catalog, routes, images.width, images.height)
    text_tokens = np.maximum(
        traffic["input_tokens"].fill_null(0).to_numpy() - traffic["image_tokens"].fill_null(0).to_numpy(), 0
    ).astype(float)
    out_by_route = scored.group_by("route").agg(pl.col("output_tokens").mean()).rows()
    overall_out = float(np.nan_to_num(scored["output_tokens"].cast(pl.Float64).to_numpy().mean()))
    output_tokens = {Route.parse(k).key: float(v or overall_out) for k, v in out_by_route}
    for r in routes:
        output_tokens.setdefault(r.key, overall_out)
    cost = route_costs(catalog, routes, tokens, text_tokens, output_tokens)
    cols = np.arange(len(traffic))
    taken_ok = taken >= 0
    strong = int(np.bincount(taken[taken_ok]).argmax()) if taken_ok.any() else int(quality.mean(axis=1).argmax())
    current = np.where(taken_ok, taken, strong)
    reference = current[subset]
    train_side = np.maximum(train_images.width, train_images.height).astype(float)
    evidence = (obs_routes[known], train_images.text_height * 1000.0 / np.maximum(train_side, 1.0), train_side)
    m = Matrices(cost, quality, permille, long_side, draws, subset, confidence, current, evidence, unseen_loss)

    baseline_cost = float(traffic["billed_cost_usd"].fill_null(0).cast(pl.Float64).to_numpy().mean())
    # The current routes' quality, measured where scored: the same level the bound starts from.
    baseline_quality = float(quality[current, cols].mean())
    observed = traffic["quality"].drop_nulls()
    observed_baseline = float(observed.cast(pl.Float64).to_numpy().mean()) if observed.len() else float("nan")

    space = SearchSpace.from_data(routes, permille, long_side, fallback=fallback)
    seeds = [{"n_text_cuts": 0, "n_side_cuts": 0, "route_0": routes[strong].key, "route_unknown_text": routes[strong].key}]
    name = study_name or f"aperture-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    result = run_search(
        space, m, baseline_quality=baseline_quality, baseline_cost=float(cost[strong].mean()), tolerance=tolerance,
        trials=trials, seed=seed, storage=storage, study_name=name, seeds=seeds, progress=progress,
    )
    if result.best is None:
        raise OptimizerError(f"no ruleset within {tolerance:.3f} of the baseline quality was found in {len(result.points)} trials")
    policy = build_params(optuna.trial.FixedTrial(result.best.params), space)
    pred_cost, pred_quality, pred_lower = evaluate_bounds(policy, m)
    chosen = assign(policy, permille, long_side)

    # Interval: the members' spread of the policy's mean (what the model does not know) and the
    # sampling spread over images (what a different window of traffic would show), combined.
    per_image = quality[chosen, cols]
    sub = chosen[subset]
    k = np.arange(len(sub))
    member_means = draws[:, sub, k].mean(axis=1) - draws[:, reference, k].mean(axis=1)
    central = float(member_means.mean())
    below = max(0.0, central - float(np.quantile(member_means, 0.05)))
    above = max(0.0, float(np.quantile(member_means, 0.95)) - central)
    sampling = 1.96 * float(per_image.std(ddof=1) / np.sqrt(len(per_image))) if len(per_image) > 1 else 0.0
    interval = (max(0.0, pred_quality - float(np.hypot(below, sampling))),
                min(1.0, pred_quality + float(np.hypot(above, sampling))))

    off_policy = None
    rewards = traffic["quality"].to_numpy()
    have = taken_ok & ~np.isnan(rewards.astype(float))
    if have.sum() >= 10:
        q_taken = quality[taken[have], cols[have]]
        q_chosen = quality[chosen[have], cols[have]]
        off_policy = ope.estimate(taken[have], rewards[have].astype(float), traffic["propensity"].to_numpy()[have],
                                  chosen[have], q_chosen, q_taken)

    weak = int(np.argmin(cost.mean(axis=1)))
    front = result.pareto()
    front_share = []
    for p in front:
        pol = build_params(optuna.trial.FixedTrial(p.params), space)
        front_share.append((float((assign(pol, permille, long_side) == strong).mean()), p.quality))
    tradeoff = trade_off(front_share, float(quality[strong].mean()), float(quality[weak].mean()))
    shares = {routes[i].key: float(c) for i, c in enumerate(np.bincount(chosen, minlength=len(routes)) / len(chosen)) if c > 0}

    ruleset = to_ruleset(policy, space, name=f"optimized-{name}")
    text = dump_ruleset(ruleset)
    plot = None
    if plot_path is not None:
        plot = plot_front([(p.cost, p.quality) for p in result.points], [(p.cost, p.quality) for p in front],
                          (float(cost[strong].mean()), float(quality[strong].mean())), (pred_cost, pred_quality), plot_path)
    window = traffic["ts"]
    provenance = {
        "study": name,
        "trial": result.best.number,
        "storage": storage,
        "data_window": [str(window.min()), str(window.max())],
        "requests": traffic.height,
        "scored": scored.height,
        "routes_observed": sorted(observed_keys),
        "predicted_cost_per_request_usd": pred_cost,
        "baseline_cost_per_request_usd": baseline_cost,
        "predicted_quality": pred_quality,
        "quality_interval": list(interval),
        "quality_lower_bound": pred_lower,
        "confidence": confidence,
        "unseen_loss": unseen_loss,
        "baseline_quality": baseline_quality,
        "tolerance": tolerance,
        "quality_model_cv_mae": qmodel.cv_mae,
        "observed_cells": anchored,
    }
    return Proposal(
        ruleset, text, policy, pred_cost, pred_quality, interval, float(cost[strong].mean()), baseline_quality,
        observed_baseline, 1.0 - pred_cost / max(float(cost[strong].mean()), 1e-12), result, tradeoff, off_policy,
        shares, provenance, plot,
    )


def _image_ids(df: pl.DataFrame) -> np.ndarray:
    """One id per image (its sha256, else its span), so the bootstrap resamples whole images."""
    if "sha256" not in df.columns:
        return df["span_id"].to_numpy().astype(str)
    return df.select(pl.coalesce("sha256", "span_id")).to_series().to_numpy().astype(str)


def _take(images: ImageTable, rows: np.ndarray) -> ImageTable:
    return ImageTable(images.width[rows], images.height[rows], images.text_height[rows], images.task[rows])


def anchor_to_taken(quality: np.ndarray, taken: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Shift each image's predicted column so that the route it took predicts its measured score:
    ``q[r, i] = measured[i] + q[r, i] − q[taken[i], i]`` (clipped to [0, 1]). What is particular to
    the image (a hard page, an unlucky field) stays with it on every route; only the model's
    *difference* between routes is predicted. Works on [R, N] and on [B, R, N] arrays."""
    ok = (taken >= 0) & ~np.isnan(measured)
    cols = np.flatnonzero(ok)
    if len(cols) == 0:
        return quality
    out = quality.copy()
    own = quality[..., taken[cols], cols]  # [..., k]
    out[..., cols] = np.clip(measured[cols] + quality[..., cols] - own[..., None, :], 0.0, 1.0)
    return out


def observed_cells(traffic: pl.DataFrame, scored: pl.DataFrame, routes: Sequence[Route]) -> list[tuple[int, int, float]]:
    """(route, image, mean score) wherever a traffic image was measured on a candidate route,
    by its own request or a replay of it (matched on image hash and task)."""
    if "sha256" not in traffic.columns or "sha256" not in scored.columns:
        return []
    observed = (
        scored.filter(pl.col("sha256").is_not_null())
        .group_by("sha256", "task", "route").agg(pl.col("quality").mean())
    )
    index = {r.key: i for i, r in enumerate(routes)}
    by_image: dict[tuple[str, str], dict[int, float]] = {}
    for sha, task, route, q in observed.iter_rows():
        r = index.get(Route.parse(route).key)
        if r is not None:
            by_image.setdefault((sha, task), {})[r] = float(q)
    return [
        (r, i, q)
        for i, (sha, task) in enumerate(zip(traffic["sha256"].to_list(), traffic["task"].to_list(), strict=True))
        for r, q in by_image.get((sha, task), {}).items()
    ]


def _apply_cells(quality: np.ndarray, cells: Sequence[tuple[int, int, float]]) -> int:
    for r, i, q in cells:
        quality[..., r, i] = q
    return len(cells)


def anchor_observed(quality: np.ndarray, traffic: pl.DataFrame, scored: pl.DataFrame, routes: Sequence[Route]) -> int:
    """Replace predictions by what was observed where an image was actually sent on a route
    (its own request, or a replay of it): the model fills in only what nobody measured.
    Returns how many (route, image) cells were anchored."""
    return _apply_cells(quality, observed_cells(traffic, scored, routes))


def predicted_cost_on(
    ruleset: Ruleset, catalog: Mapping[str, Any], traffic: pl.DataFrame
) -> float:
    """Re-price given traffic under ``ruleset`` with the exact token math (for realised-vs-predicted checks)."""
    from router.rules import ImageFeatures, RequestFeatures, choose_route

    images = _image_table(traffic)
    assigned = []
    for w, h, t in zip(images.width, images.height, images.text_height, strict=True):
        features = RequestFeatures(images=(ImageFeatures(int(w), int(h), 0, "png", None if np.isnan(t) else float(t)),))
        target = choose_route(ruleset, features).target
        assigned.append(Route(target.model, target.detail))
    text_tokens = np.maximum(traffic["input_tokens"].fill_null(0).to_numpy() - traffic["image_tokens"].fill_null(0).to_numpy(), 0).astype(float)
    outputs = traffic["output_tokens"].fill_null(0).to_numpy().astype(float)
    return float(assigned_costs(catalog, assigned, images.width, images.height, text_tokens, outputs).sum())
