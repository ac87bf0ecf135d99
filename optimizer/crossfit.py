"""Cross-fitted choice: choose on one half of the training images, certify on the other.

Two modes (``OptimizeSettings.cross_fit``): ``"routes"`` (a bucket moves off its reference route
only where both halves choose the same route on their own) and ``"search"`` (the whole search
runs on one half and its winner must hold on the other; ``held_out_search``). Measured in
docs/benchmarks.md ("Cross-fitted route choice"): neither fixes ``small-models-misread`` with 60
training images, so both are off by default.

The exact route choice (``optimizer.exact``) picks, for given cuts, the cheapest route per
bucket whose bound holds on the logged images. The bound is read on the same images the routes
were picked on, so an exact minimiser favours the buckets where a cheap route was lucky there
(the optimiser's curse): with 60 training images in ``small-models-misread`` its proposals lost
3.7–5.7 points on fresh traffic. Here the images are split in two folds by a hash of the image
(deterministic, every row of one image in the same fold); the routes are chosen exactly on each
fold alone, against that fold's own baseline less the same tolerance, and a bucket keeps a move
only where the two independent choices agree. A cheap route that was lucky on one half and
loses on the other is chosen on one half only and stays on the reference route.

The bound's unseen-failure allowance depends on how often a route was observed in a bucket, not
on which images are selected, so each fold is charged its share of the whole training set's
allowance (the fold's moved images over the bucket's observations + 1). With that, the fold
bounds add up: the agreed choice's separable loss on all images is at most the sum of its losses
on the folds, each within the tolerance, so the agreed choice meets the full bound whenever both
folds' choices meet theirs and every image's current route is the reference (one logged route plus
replays, so that staying loses nothing). Otherwise, and for the bootstrap shortfall (not
separable), the bound on all images decides, as the search checks it for every trial.
The halves cannot see what the whole sample lacks: a small bucket whose cheap route was clean on
all its training images is chosen on both halves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal, get_args

import numpy as np
import optuna

from optimizer.exact import cheapest_routes, with_routes
from optimizer.search import Matrices, RouteChooser, SearchResult, evaluate_bounds, run_search
from optimizer.space import Policy, SearchSpace, build_params

FOLDS = 2
# "routes": for each sampled set of cuts, a bucket moves only where the exact choices on both
# folds agree; "search": the whole search (cuts and routes) runs on each fold and its winner must
# meet the bound on the other fold, the held-out one.
CrossFit = Literal["off", "routes", "search"]
HELD_OUT = ", and no winner of a search on one half of the images held on the other half (cross_fit='search')"


def image_folds(ids: Sequence[str], k: int = FOLDS) -> np.ndarray:
    """Fold per row: the distinct ids ranked by a stable hash (blake2b, not Python's salted
    ``hash``) and dealt round-robin, so folds differ in size by at most one image and every row
    of one image lands in the same fold. The same ids give the same folds in every process."""
    distinct = sorted(set(ids), key=lambda i: (hashlib.blake2b(i.encode(), digest_size=8).digest(), i))
    fold_of = {image: rank % k for rank, image in enumerate(distinct)}
    return np.fromiter((fold_of[i] for i in ids), dtype=np.int64, count=len(ids))


def restrict(m: Matrices, cols: np.ndarray) -> Matrices:
    """``m`` on the images ``cols`` (sorted positions) only. The evidence (every scored
    observation) is kept whole: the unseen-failure allowance of a move is then charged on the
    fold's moved images against all observations of the route in the bucket, i.e. the fold's
    share of the allowance the whole training set carries."""
    draws, subset = m.draws, m.subset
    if draws is not None and subset is not None:
        keep = np.isin(subset, cols)
        draws, subset = draws[:, :, keep], np.searchsorted(cols, subset[keep])
    return replace(
        m, cost=m.cost[:, cols], quality=m.quality[:, cols], text_permille=m.text_permille[cols],
        long_side=m.long_side[cols], draws=draws, subset=subset,
        current=None if m.current is None else m.current[cols],
        task=None if m.task is None else m.task[cols], fold=None,
    )


def agreed_routes(reference: int, choices: Sequence[np.ndarray]) -> np.ndarray:
    """Per bucket: the route every fold chose, where they all chose the same one; else ``reference``."""
    stacked = np.stack([np.asarray(c, dtype=np.int64) for c in choices])
    same = (stacked == stacked[0]).all(axis=0)
    return np.where(same, stacked[0], reference)


def cross_fitted_routes(policy: Policy, m: Matrices, floor: float) -> tuple[Policy, tuple[float, float, float]]:
    """The routes for the cuts of ``policy`` that the exact choice picks on every fold of
    ``m.fold`` alone (the reference route elsewhere), with the (cost, quality, lower bound) of
    that choice on all images. Without folds or reference routes it is the exact choice itself.

    Each fold's floor is its own baseline less the tolerance (``floor`` is the baseline of all
    images less the tolerance). A fold without images certifies nothing: every bucket stays on
    the reference route."""
    if m.fold is None or m.current is None:
        return cheapest_routes(policy, m, floor)
    tolerance = float(m.quality[m.current, np.arange(m.cost.shape[1])].mean()) - floor
    reference = int(np.bincount(m.current).argmax())
    choices = []
    for f in range(max(FOLDS, int(m.fold.max(initial=0)) + 1)):
        cols = np.flatnonzero(m.fold == f)
        if len(cols) == 0:
            choices.append(np.full(len(policy.route_table), reference))
            continue
        base = float(m.quality[m.current[cols], cols].mean())
        chosen, _ = cheapest_routes(policy, restrict(m, cols), base - tolerance)
        choices.append(chosen.route_table)
    routed = with_routes(policy, agreed_routes(reference, choices))
    return routed, evaluate_bounds(routed, m)


def held_out_bound(policy: Policy, held_out: Matrices) -> float:
    """The lower bound of ``policy`` on images that took no part in choosing it: the baseline plus
    the mean paired change over all of them less its one-sided sampling error at the confidence
    (and the bootstrap shortfall where cells are predicted). On these images a failure of a
    moved route is observed, not unseen, and no bucket was picked for its luck here, so neither
    the unseen-failure allowance nor the per-bucket cap on gains is needed: the test is the
    tolerance's own promise, mean quality within it, at the bound's confidence."""
    return evaluate_bounds(policy, replace(held_out, losses_only=False, unseen_loss=0.0))[2]


def route_chooser(exact: bool, cross_fit: CrossFit) -> RouteChooser | None:
    """The search's route chooser: cross-fitted per set of cuts ("routes"), exact (also within
    each fold of a held-out "search"), or none (the sampler picks the routes)."""
    if cross_fit not in get_args(CrossFit):
        raise ValueError(f"cross_fit must be one of {', '.join(get_args(CrossFit))}, not {cross_fit!r}")
    if cross_fit == "routes":
        return cross_fitted_routes
    return cheapest_routes if exact or cross_fit == "search" else None


def held_out_search(space: SearchSpace, m: Matrices, *, baseline_quality: float, tolerance: float,
                    study_name: str, **search: Any) -> SearchResult:
    """``run_search`` on each fold of ``m.fold`` alone; a fold's winner is certified when its bound
    on the other folds' images (their own baseline less ``tolerance``) holds. The cheapest certified
    winner on all images is returned as its fold's search (``best`` None when none is certified:
    the search on half the images cannot show a ruleset that holds on the other half).

    This is sample splitting for the whole selection, cuts included: the images that certify a
    winner took no part in choosing it, so a bucket whose cheap route was lucky on the training
    images must be lucky again on images the search never saw."""
    assert m.fold is not None and m.current is not None, "held-out search needs folds and reference routes"
    certified: list[tuple[float, SearchResult]] = []
    results = []
    for f in range(max(FOLDS, int(m.fold.max(initial=0)) + 1)):
        inside, outside = np.flatnonzero(m.fold == f), np.flatnonzero(m.fold != f)
        if len(inside) == 0 or len(outside) == 0:
            continue
        half, rest = restrict(m, inside), restrict(m, outside)
        base_in = float(m.quality[m.current[inside], inside].mean())
        result = run_search(space, half, baseline_quality=base_in, tolerance=tolerance,
                            study_name=f"{study_name}-fold{f}", **search)
        results.append(result)
        if result.best is None:
            continue
        policy = build_params(optuna.trial.FixedTrial(result.best.params), space)
        base_out = float(m.quality[m.current[outside], outside].mean())
        if held_out_bound(policy, rest) >= base_out - tolerance:
            certified.append((evaluate_bounds(policy, m)[0], result))
    if certified:
        return min(certified, key=lambda c: c[0])[1]
    points = [p for r in results for p in r.points]
    return SearchResult(study_name, None, points, baseline_quality=baseline_quality)
