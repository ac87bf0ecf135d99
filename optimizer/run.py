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
from optimizer.anchoring import anchor_to_taken, apply_cells, observed_cells
from optimizer.crossfit import HELD_OUT, CrossFit, held_out_search, image_folds, route_chooser
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


@dataclass(frozen=True)
class OptimizeSettings:
    """The knobs of one optimisation run (``aperture optimize`` flags, the demo's choices)."""

    tolerance: float = 0.01
    trials: int = 300
    seed: int = 0
    storage: str | None = None
    study_name: str | None = None
    since: datetime | None = None
    models: Sequence[str] | None = None
    min_scored: int = 40
    min_routes_observed: int = 2
    fallback: Target | None = None
    confidence: float = 0.9
    unseen_loss: float = 0.25
    max_bound_images: int = 5000
    # True: the bound counts only predicted losses per bucket ("no worse anywhere"); False: the
    # overall mean change less its sampling error, so a gain in one bucket pays for a loss in
    # another (the tolerance's promise). The regret benchmark keeps more savings with True.
    losses_only: bool = True
    # Rules may split one task off (the router matches on the request's task). Off by default:
    # in the regret benchmark its extra parameters cost the 200-trial search more than it found.
    by_task: bool = False
    exact_routes: bool = False  # True: TPE searches the cuts, routes per bucket are exact (optimizer.exact)
    cross_fit: CrossFit = "off"  # choose on one half of the images, certify on the other (optimizer.crossfit)


@dataclass(frozen=True)
class Loaded:
    """Scored requests and traffic, the candidate routes, and which routes were observed."""

    scored: pl.DataFrame
    traffic: pl.DataFrame
    routes: list[Route]
    obs_routes: np.ndarray  # per scored row: its candidate route, −1 when not a candidate
    observed_keys: frozenset[str]

    @property
    def known(self) -> np.ndarray:
        return self.obs_routes >= 0


@dataclass(frozen=True)
class Prepared:
    """What the search needs: the matrices, and the reference routes they are measured against."""

    matrices: Matrices
    qmodel: QualityModel
    taken: np.ndarray  # per traffic image: the route it took (−1: not a candidate)
    strong: int  # the most used route (the baseline of the trade-off)
    anchored: int  # (route, image) cells where a measured score replaced the prediction
    baseline_cost: float  # billed, per request
    baseline_quality: float
    observed_baseline: float


@dataclass(frozen=True)
class Searched:
    study_name: str
    space: SearchSpace
    result: SearchResult
    policy: Policy
    chosen: np.ndarray  # per traffic image: the route the policy sends it to
    cost: float
    quality: float
    lower: float


@dataclass(frozen=True)
class Assessment:
    interval: tuple[float, float]
    off_policy: ope.OffPolicyEstimate | None
    tradeoff: TradeOff
    route_share: dict[str, float]


def optimize(
    db: str | Path,
    catalog: Mapping[str, Any],
    settings: OptimizeSettings | None = None,
    *,
    observations: Observations | None = None,
    plot_path: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Proposal:
    """Traces and scores → a proposed ruleset: load → prepare → search → assess → emit.

    >>> optimize("aperture.duckdb", cfg.models, OptimizeSettings(trials=100))  # doctest: +SKIP
    """
    settings = settings or OptimizeSettings()
    loaded = load(db, catalog, settings, observations)
    prepared = prepare(loaded, catalog, settings)
    searched = search(loaded, prepared, settings, progress)
    assessment = assess(loaded, prepared, searched)
    return emit(loaded, prepared, searched, assessment, settings, plot_path)


def load(db: str | Path, catalog: Mapping[str, Any], settings: OptimizeSettings,
         observations: Observations | None = None) -> Loaded:
    """The observations and candidate routes, or a refusal saying what data is missing."""
    obs = observations or load_observations(db, since=settings.since)
    routes = candidate_routes(catalog, settings.models)
    if len({r.model for r in routes}) < 2:
        raise OptimizerError("the catalog offers a single model: there is nothing to route between (add a second model)")
    scored, traffic = obs.scored, obs.traffic
    if scored.height < settings.min_scored:
        raise OptimizerError(
            f"too little data: {scored.height} scored requests, at least {settings.min_scored} are needed "
            "(send traffic through the gateway, then run `aperture eval`)"
        )
    if traffic.height == 0:
        raise OptimizerError("no user traffic in the window: nothing to optimise over")
    obs_routes = _route_index(scored["route"].to_list(), routes)
    observed_keys = frozenset(routes[i].key for i in set(obs_routes[obs_routes >= 0].tolist()))
    if len(observed_keys) < settings.min_routes_observed:
        raise OptimizerError(
            f"only {sorted(observed_keys) or 'no candidate route'} observed: quality of other routes is unknown. "
            "Turn on exploration (routing.explore_fraction) or run `aperture replay`, then `aperture eval`."
        )
    return Loaded(scored, traffic, list(routes), obs_routes, observed_keys)


def prepare(loaded: Loaded, catalog: Mapping[str, Any], settings: OptimizeSettings) -> Prepared:
    """Fit the quality model and build the cost and quality matrices over the logged images."""
    scored, traffic, routes = loaded.scored, loaded.traffic, loaded.routes
    # Quality model on every scored (image, route) pair, with a bootstrap ensemble over images.
    train = scored.filter(pl.Series(loaded.known))
    train_images = _image_table(train)
    train_scale = effective_scale_matrix(catalog, routes, train_images.width, train_images.height)
    qmodel: QualityModel = fit_quality_model(
        train_images, loaded.obs_routes[loaded.known], train["quality"].to_numpy(), routes, train_scale,
        groups=_image_ids(train), seed=settings.seed,
    )
    images = _image_table(traffic)
    long_side = np.maximum(images.width, images.height).astype(float)
    permille = images.text_height * 1000.0 / np.maximum(long_side, 1.0)
    taken = _route_index(traffic["route"].to_list(), routes)
    quality, draws, subset, anchored = _quality_matrices(loaded, catalog, settings, qmodel, images, taken)
    cost = route_costs(catalog, routes, image_tokens_matrix(catalog, routes, images.width, images.height),
                       _text_tokens(traffic), _output_tokens(scored, routes))
    taken_ok = taken >= 0
    strong = int(np.bincount(taken[taken_ok]).argmax()) if taken_ok.any() else int(quality.mean(axis=1).argmax())
    current = np.where(taken_ok, taken, strong)
    train_side = np.maximum(train_images.width, train_images.height).astype(float)
    evidence = (loaded.obs_routes[loaded.known], train_images.text_height * 1000.0 / np.maximum(train_side, 1.0), train_side)
    m = Matrices(cost, quality, permille, long_side, draws, subset, settings.confidence, current, evidence,
                 settings.unseen_loss, images.task if settings.by_task else None,
                 train_images.task if settings.by_task else None, settings.losses_only,
                 image_folds(list(_image_ids(traffic))) if settings.cross_fit != "off" else None)
    observed = traffic["quality"].drop_nulls()
    return Prepared(
        m, qmodel, taken, strong, anchored,
        baseline_cost=float(traffic["billed_cost_usd"].fill_null(0).cast(pl.Float64).to_numpy().mean()),
        # The current routes' quality, measured where scored: the same level the bound starts from.
        baseline_quality=float(quality[current, np.arange(len(traffic))].mean()),
        observed_baseline=float(observed.cast(pl.Float64).to_numpy().mean()) if observed.len() else float("nan"),
    )


def _quality_matrices(loaded: Loaded, catalog: Mapping[str, Any], settings: OptimizeSettings,
                      qmodel: QualityModel, images: ImageTable, taken: np.ndarray,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Predicted quality of every route on every logged image, anchored to what was measured:
    the image's own score on the route it took, plus the model's difference between routes;
    the measured score itself wherever the image was sent on a route (its request or a replay).
    Returns (quality [R, N], bootstrap draws [B, R, K] on ``subset``, subset, anchored cells)."""
    traffic = loaded.traffic
    scale = effective_scale_matrix(catalog, loaded.routes, images.width, images.height)
    measured_q = traffic["quality"].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    cells = observed_cells(traffic, loaded.scored, loaded.routes)
    quality = anchor_to_taken(qmodel.predict_matrix(images, scale), taken, measured_q)
    anchored = apply_cells(quality, cells)
    rng = np.random.default_rng(settings.seed)
    subset = np.sort(rng.choice(len(traffic), min(len(traffic), settings.max_bound_images), replace=False))
    draws = anchor_to_taken(qmodel.predict_draws(images.take(subset), scale[:, subset]), taken[subset], measured_q[subset])
    position = {int(i): k for k, i in enumerate(subset)}
    apply_cells(draws, [(r, position[i], q) for r, i, q in cells if i in position])
    return quality, draws, subset, anchored


def _text_tokens(traffic: pl.DataFrame) -> np.ndarray:
    return np.maximum(
        traffic["input_tokens"].fill_null(0).to_numpy() - traffic["image_tokens"].fill_null(0).to_numpy(), 0
    ).astype(float)


def _output_tokens(scored: pl.DataFrame, routes: Sequence[Route]) -> dict[str, float]:
    """Mean output tokens per route as observed, else the overall mean."""
    out_by_route = scored.group_by("route").agg(pl.col("output_tokens").mean()).rows()
    overall_out = float(np.nan_to_num(scored["output_tokens"].cast(pl.Float64).to_numpy().mean()))
    output_tokens = {Route.parse(k).key: float(v or overall_out) for k, v in out_by_route}
    for r in routes:
        output_tokens.setdefault(r.key, overall_out)
    return output_tokens


def search(loaded: Loaded, prepared: Prepared, settings: OptimizeSettings,
           progress: Callable[[int, int], None] | None = None) -> Searched:
    """The Optuna search, seeded with the current strongest route; the winner rebuilt from its params."""
    m, routes, strong = prepared.matrices, loaded.routes, prepared.strong
    space = SearchSpace.from_data(routes, m.text_permille, m.long_side, fallback=settings.fallback, task=m.task)
    seeds = [{"n_text_cuts": 0, "n_side_cuts": 0, "route_0": routes[strong].key, "route_unknown_text": routes[strong].key}]
    name = settings.study_name or f"aperture-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    result = (held_out_search if settings.cross_fit == "search" else run_search)(
        space, m, baseline_quality=prepared.baseline_quality, baseline_cost=float(m.cost[strong].mean()),
        tolerance=settings.tolerance, trials=settings.trials, seed=settings.seed, storage=settings.storage,
        study_name=name, seeds=seeds, progress=progress, choose_routes=route_chooser(settings.exact_routes, settings.cross_fit),
    )
    if result.best is None:
        raise OptimizerError(f"no ruleset within {settings.tolerance:.3f} of the baseline quality was found "
                             f"in {len(result.points)} trials" + HELD_OUT * (settings.cross_fit == "search"))
    policy = build_params(optuna.trial.FixedTrial(result.best.params), space)
    cost, quality, lower = evaluate_bounds(policy, m)
    chosen = assign(policy, m.text_permille, m.long_side, m.task)
    return Searched(name, space, result, policy, chosen, cost, quality, lower)


def assess(loaded: Loaded, prepared: Prepared, searched: Searched) -> Assessment:
    """Interval, off-policy estimate, RouteLLM-style trade-off and route shares of the winner."""
    m, traffic, chosen = prepared.matrices, loaded.traffic, searched.chosen
    assert m.draws is not None and m.subset is not None and m.current is not None
    cols = np.arange(len(traffic))
    # Interval: the members' spread of the policy's mean (what the model does not know) and the
    # sampling spread over images (what a different window of traffic would show), combined.
    per_image = m.quality[chosen, cols]
    sub, reference = chosen[m.subset], m.current[m.subset]
    k = np.arange(len(sub))
    member_means = m.draws[:, sub, k].mean(axis=1) - m.draws[:, reference, k].mean(axis=1)
    central = float(member_means.mean())
    below = max(0.0, central - float(np.quantile(member_means, 0.05)))
    above = max(0.0, float(np.quantile(member_means, 0.95)) - central)
    sampling = 1.96 * float(per_image.std(ddof=1) / np.sqrt(len(per_image))) if len(per_image) > 1 else 0.0
    interval = (max(0.0, searched.quality - float(np.hypot(below, sampling))),
                min(1.0, searched.quality + float(np.hypot(above, sampling))))

    off_policy = None
    taken, rewards = prepared.taken, traffic["quality"].to_numpy()
    have = (taken >= 0) & ~np.isnan(rewards.astype(float))
    if have.sum() >= 10:
        q_taken = m.quality[taken[have], cols[have]]
        q_chosen = m.quality[chosen[have], cols[have]]
        off_policy = ope.estimate(taken[have], rewards[have].astype(float), traffic["propensity"].to_numpy()[have],
                                  chosen[have], q_chosen, q_taken)

    strong, weak = prepared.strong, int(np.argmin(m.cost.mean(axis=1)))
    front_share = []
    for p in searched.result.pareto():
        pol = build_params(optuna.trial.FixedTrial(p.params), searched.space)
        front_share.append((float((assign(pol, m.text_permille, m.long_side, m.task) == strong).mean()), p.quality))
    tradeoff = trade_off(front_share, float(m.quality[strong].mean()), float(m.quality[weak].mean()))
    routes = loaded.routes
    shares = {routes[i].key: float(c) for i, c in enumerate(np.bincount(chosen, minlength=len(routes)) / len(chosen)) if c > 0}
    return Assessment(interval, off_policy, tradeoff, shares)


def emit(loaded: Loaded, prepared: Prepared, searched: Searched, assessment: Assessment,
         settings: OptimizeSettings, plot_path: Path | None = None) -> Proposal:
    """The winner as a ruleset with provenance (and the front's plot when asked)."""
    m, result, strong = prepared.matrices, searched.result, prepared.strong
    assert result.best is not None
    ruleset = to_ruleset(searched.policy, searched.space, name=f"optimized-{searched.study_name}")
    strong_cost = float(m.cost[strong].mean())
    plot = None
    if plot_path is not None:
        plot = plot_front([(p.cost, p.quality) for p in result.points], [(p.cost, p.quality) for p in result.pareto()],
                          (strong_cost, float(m.quality[strong].mean())), (searched.cost, searched.quality), plot_path)
    window = loaded.traffic["ts"]
    provenance = {
        "study": searched.study_name,
        "trial": result.best.number,
        "storage": settings.storage,
        "data_window": [str(window.min()), str(window.max())],
        "requests": loaded.traffic.height,
        "scored": loaded.scored.height,
        "routes_observed": sorted(loaded.observed_keys),
        "predicted_cost_per_request_usd": searched.cost,
        "baseline_cost_per_request_usd": prepared.baseline_cost,
        "predicted_quality": searched.quality,
        "quality_interval": list(assessment.interval),
        "quality_lower_bound": searched.lower,
        "confidence": settings.confidence,
        "unseen_loss": settings.unseen_loss,
        "baseline_quality": prepared.baseline_quality,
        "tolerance": settings.tolerance,
        "quality_model_cv_mae": prepared.qmodel.cv_mae,
        "observed_cells": prepared.anchored,
    }
    return Proposal(
        ruleset, dump_ruleset(ruleset), searched.policy, searched.cost, searched.quality, assessment.interval,
        strong_cost, prepared.baseline_quality, prepared.observed_baseline,
        1.0 - searched.cost / max(strong_cost, 1e-12), result, assessment.tradeoff, assessment.off_policy,
        assessment.route_share, provenance, plot,
    )


def _image_ids(df: pl.DataFrame) -> np.ndarray:
    """One id per image (its sha256, else its span), so the bootstrap resamples whole images."""
    if "sha256" not in df.columns:
        return df["span_id"].to_numpy().astype(str)
    return df.select(pl.coalesce("sha256", "span_id")).to_series().to_numpy().astype(str)


def predicted_cost_on(ruleset: Ruleset, catalog: Mapping[str, Any], traffic: pl.DataFrame) -> float:
    """Re-price given traffic under ``ruleset`` with the exact token math (for realised-vs-predicted checks)."""
    from router.rules import ImageFeatures, RequestFeatures, choose_route

    images = _image_table(traffic)
    assigned = []
    for w, h, t, task in zip(images.width, images.height, images.text_height, images.task, strict=True):
        features = RequestFeatures(images=(ImageFeatures(int(w), int(h), 0, "png", None if np.isnan(t) else float(t)),),
                                   task=str(task))
        target = choose_route(ruleset, features).target
        assigned.append(Route(target.model, target.detail))
    text_tokens = np.maximum(traffic["input_tokens"].fill_null(0).to_numpy() - traffic["image_tokens"].fill_null(0).to_numpy(), 0).astype(float)
    outputs = traffic["output_tokens"].fill_null(0).to_numpy().astype(float)
    return float(assigned_costs(catalog, assigned, images.width, images.height, text_tokens, outputs).sum())
