"""Optuna search over the ruleset space: minimise cost subject to a lower confidence bound on
quality ≥ baseline − tolerance.

Seeded TPE with Optuna's constraint handling; early stopping on patience and minimum delta;
studies live in Optuna storage (SQLite file by default, a PostgreSQL URL for several
workers), so a study can be resumed and opened by ``optuna-dashboard``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import optuna

from collector.analysis import pareto_indices
from optimizer.space import (
    Policy,
    SearchSpace,
    assign,
    buckets,
    build_params,
    cuts_only,
    route_params,
)

# Picks the routes of a policy's buckets for its cuts: (policy, matrices, floor) → the routed
# policy and its (cost, quality, lower bound). ``optimizer.exact.cheapest_routes`` is one.
RouteChooser = Callable[[Policy, "Matrices", float], tuple[Policy, tuple[float, float, float]]]


@dataclass(frozen=True)
class Matrices:
    """Everything a trial needs, precomputed: cost[r, i], quality[r, i] (point prediction, observed
    where measured) and the features used to bucket; ``draws[b, r, k]`` is the quality matrix
    under each bootstrap member on the images ``subset[k]`` (all images, or a fixed sample of a
    large log), from which a policy's lower confidence bound is read."""

    cost: np.ndarray
    quality: np.ndarray
    text_permille: np.ndarray  # text height per thousand pixels of the long side (NaN: unknown)
    long_side: np.ndarray
    draws: np.ndarray | None = None
    subset: np.ndarray | None = None
    confidence: float = 0.9
    current: np.ndarray | None = None  # per image: the route its traffic took (the reference)
    # Every scored observation (request, exploration, replay): its route, ‰ text height and long side.
    evidence: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    unseen_loss: float = 0.0  # what one failure the observations did not show would cost (see evaluate_bounds)
    task: np.ndarray | None = None  # per image: its task (for a policy that splits one off)
    evidence_task: np.ndarray | None = None  # per observation: its task
    losses_only: bool = False  # count each bucket's predicted change only where it is a loss (see evaluate_bounds)
    fold: np.ndarray | None = None  # per image: its cross-fitting fold (optimizer.crossfit), None: no cross-fitting

@dataclass
class TrialPoint:
    number: int
    cost: float
    quality: float
    feasible: bool
    params: dict[str, object]
    quality_lower: float = float("nan")


@dataclass
class SearchResult:
    study_name: str
    best: TrialPoint | None
    points: list[TrialPoint] = field(default_factory=list)
    baseline_cost: float = 0.0
    baseline_quality: float = 0.0
    stopped_early: bool = False

    def pareto(self) -> list[TrialPoint]:
        """Non-dominated trials (lower cost, higher quality), sorted by cost."""
        rows = pareto_indices([p.cost for p in self.points], [p.quality for p in self.points])
        return [self.points[i] for i in rows]


def evaluate(policy: Policy, m: Matrices) -> tuple[float, float]:
    """Mean cost per request and mean predicted quality of ``policy`` on the logged images."""
    cost, quality, _ = evaluate_bounds(policy, m)
    return cost, quality


def evaluate_bounds(policy: Policy, m: Matrices) -> tuple[float, float, float]:
    """Cost, predicted quality and a one-sided lower bound at ``m.confidence`` for the constraint.

    The bound starts from the current routes' quality and adds the policy's predicted change
    over all images: a bucket predicted to read better pays for one predicted to read worse,
    as in the oracle and in the tolerance's own promise (mean quality within ``tolerance`` of
    the baseline), less the one-sided sampling error of that paired mean change at
    ``m.confidence`` (a gain seen on few images is not yet a gain). With ``m.losses_only`` a bucket's change counts only where it is a loss
    ("no worse anywhere": stricter, and it leaves most savings that need a gain elsewhere).
    How sure the gains are is the bound's job, not the cap's: it then subtracts the bootstrap
    members' shortfall on the subset (how far the ``1 − confidence`` quantile of their change
    falls below its average) and the unseen-failure allowance for moves backed by few
    observations. Measured cells are the same in every member and buckets left on the current
    routes change nothing, so keeping the current routes has a bound equal to its quality."""
    idx = assign(policy, m.text_permille, m.long_side, m.task)
    cols = np.arange(m.cost.shape[1])
    cost = float(m.cost[idx, cols].mean())
    quality = float(m.quality[idx, cols].mean())
    if m.current is None:
        return cost, quality, quality
    bucket = buckets(policy, m.text_permille, m.long_side, m.task)
    routes_of = policy.route_table
    n_buckets = len(routes_of)
    now = m.quality[m.current, cols]
    change = m.quality[idx, cols] - now
    bounded = float(now.mean()) + _change(bucket, change, n_buckets, m.losses_only)
    if not m.losses_only and len(cols) > 1:
        # What another window of traffic would show: the paired change's sampling error. Without
        # it, gains measured on a few replayed images would count as certain.
        bounded -= NormalDist().inv_cdf(m.confidence) * float(change.std(ddof=1)) / np.sqrt(len(cols))
    if m.evidence is not None and m.unseen_loss > 0:
        # Rule-of-succession allowance: a bucket whose n images move to a route observed k times
        # on images of that bucket may hide a failure rate up to about 1/(k + 1) that the sample
        # did not show; it is charged ``unseen_loss × n / (k + 1)``. Moves backed by few
        # observations cost more than well-observed ones; bootstrap members cannot see this.
        moved = np.bincount(bucket, weights=idx != m.current, minlength=n_buckets)
        ev_route, ev_permille, ev_side = m.evidence
        ev_bucket = buckets(policy, ev_permille, ev_side, m.evidence_task)
        k = np.bincount(ev_bucket, weights=ev_route == routes_of[ev_bucket], minlength=n_buckets)
        bounded -= float((m.unseen_loss * moved / (k + 1.0)).sum() / len(cols))
    if m.draws is None or m.subset is None or len(m.subset) == 0:
        return cost, quality, bounded
    k = np.arange(len(m.subset))
    sub, ref, sub_bucket = idx[m.subset], m.current[m.subset], bucket[m.subset]
    changes = np.array([_change(sub_bucket, d[sub, k] - d[ref, k], n_buckets, m.losses_only) for d in m.draws])
    shortfall = max(0.0, float(changes.mean() - np.quantile(changes, 1.0 - m.confidence)))
    return cost, quality, bounded - shortfall


def _change(bucket: np.ndarray, change: np.ndarray, n_buckets: int, losses_only: bool) -> float:
    """Mean per-image change; with ``losses_only`` each bucket's total is capped at zero from above."""
    if not losses_only:
        return float(change.sum() / max(len(change), 1))
    totals = np.bincount(bucket, weights=change, minlength=n_buckets)
    return float(np.minimum(totals, 0.0).sum() / max(len(change), 1))


class EarlyStopping:
    """Stop when the best feasible cost has not improved by ``min_delta`` (relative) for ``patience`` trials."""

    def __init__(self, patience: int, min_delta: float) -> None:
        self.patience, self.min_delta = patience, min_delta
        self.best = float("inf")
        self.since = 0
        self.stopped = False

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = trial.user_attrs.get("cost")
        if trial.user_attrs.get("feasible") and value is not None and value < self.best * (1 - self.min_delta):
            self.best, self.since = value, 0
        else:
            self.since += 1
        if self.since >= self.patience:
            self.stopped = True
            study.stop()


def run_search(
    space: SearchSpace,
    m: Matrices,
    *,
    baseline_quality: float,
    baseline_cost: float,
    tolerance: float,
    trials: int = 300,
    seed: int = 0,
    storage: str | None = None,
    study_name: str = "aperture-routing",
    patience: int = 80,
    min_delta: float = 0.001,
    seeds: list[dict[str, object]] | None = None,
    progress: Callable[[int, int], None] | None = None,
    choose_routes: RouteChooser | None = None,
) -> SearchResult:
    """Seeded TPE over the space. With ``choose_routes`` the sampler searches only the cuts (and
    the task split) and the routes per bucket come from ``choose_routes``; they are kept as the
    trial's ``routes`` user attribute and merged into each point's params, so the winner rebuilds
    through ``build_params`` with a ``FixedTrial`` as before."""
    objective = _objective(space, m, floor=baseline_quality - tolerance, choose_routes=choose_routes)
    with warnings.catch_warnings():
        # multivariate/group/constraints are stable in practice but still flagged experimental.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=min(25, max(5, trials // 5)), multivariate=True, group=True,
        )
    logging.getLogger("optuna").setLevel(logging.WARNING)
    study, persistent = _open_study(study_name, storage, sampler)
    already = len(study.trials)  # finished trials of a resumed study (before the seeds are queued)
    for params in seeds or []:
        study.enqueue_trial(params, skip_if_exists=True)
    stopper = EarlyStopping(patience, min_delta)
    callbacks: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = [stopper]
    if progress is not None:
        callbacks.append(lambda s, t: progress(t.number + 1, trials))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(objective, n_trials=max(trials - already, 0), callbacks=callbacks, gc_after_trial=False)
    if persistent is not None:
        persistent.add_trials(study.get_trials(deepcopy=False)[already:])
    points = [
        TrialPoint(t.number, t.user_attrs["cost"], t.user_attrs["quality"], bool(t.user_attrs["feasible"]),
                   {**t.params, **t.user_attrs.get("routes", {})},
                   float(t.user_attrs.get("quality_lower", t.user_attrs["quality"])))
        for t in study.trials
        if t.state == optuna.trial.TrialState.COMPLETE and "cost" in t.user_attrs
    ]
    feasible = [p for p in points if p.feasible]
    best = min(feasible, key=lambda p: (p.cost, -p.quality)) if feasible else None
    return SearchResult(study_name, best, points, baseline_cost, baseline_quality, stopper.stopped)


def _objective(space: SearchSpace, m: Matrices, floor: float,
               choose_routes: RouteChooser | None = None) -> Callable[[optuna.Trial], float]:
    """Cost to minimise, with the lower bound's shortfall below ``floor`` as Optuna's constraint."""

    def objective(trial: optuna.Trial) -> float:
        if choose_routes is None:
            policy = build_params(trial, space)
            cost, quality, lower = evaluate_bounds(policy, m)
        else:
            routed, (cost, quality, lower) = choose_routes(build_params(cuts_only(trial), space), m, floor)
            chosen = route_params(routed, space)
            trial.set_user_attr("routes", chosen)
            # The recorded routes must rebuild the very policy that was scored.
            if build_params(optuna.trial.FixedTrial({**trial.params, **chosen}), space) != routed:
                raise RuntimeError(f"route params {chosen} do not rebuild the scored policy {routed}")
        violation = max(0.0, floor - lower)
        trial.set_user_attr("cost", cost)
        trial.set_user_attr("quality", quality)
        trial.set_user_attr("quality_lower", lower)
        trial.set_user_attr("feasible", violation == 0.0)
        trial.set_user_attr("violation", violation)
        trial.set_constraint("quality_floor", violation)
        return cost

    return objective


def _open_study(study_name: str, storage: str | None,
                sampler: optuna.samplers.BaseSampler) -> tuple[optuna.Study, optuna.Study | None]:
    """The study to search in, and the persistent one to write back to (SQLite only).

    A SQLite study is searched in memory and written back at the end: Optuna's RDB storage costs
    ~10× the search itself on SQLite (every trial re-reads the study). A server database
    (PostgreSQL) is used live, so that several workers share one study while it runs.
    """
    if storage is not None and storage.startswith("sqlite"):
        persistent = optuna.create_study(study_name=study_name, storage=storage, direction="minimize", load_if_exists=True)
        study = optuna.create_study(study_name=study_name, sampler=sampler, direction="minimize")
        study.add_trials(persistent.get_trials(deepcopy=False))
        return study, persistent
    study = optuna.create_study(
        study_name=study_name, storage=storage, sampler=sampler, direction="minimize", load_if_exists=True
    )
    return study, None
