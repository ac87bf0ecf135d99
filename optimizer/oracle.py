"""The best rules in hindsight: what a router could have saved had it known every answer.

Given the measured quality and exact cost of every image on every candidate route (a world's
emulator reads them all), the oracle finds the cheapest rules over the features a router sees
(text height relative to the long side, the long side, optionally the task) whose mean quality
stays within ``tolerance`` of the baseline route's. The loop's regret is measured against it.

Rules have the optimizer's shape (``optimizer.space``): up to ``max_text_cuts`` cuts on text
height (‰), up to ``max_side_cuts`` on the long side, one route per bucket, one for images with
no text estimate; with ``by_task`` every bucket is further split by task. For each choice of
cuts, the route per bucket is a multiple-choice knapsack (least cost at a quality floor),
solved exactly by enumeration when small and by a Lagrangian sweep otherwise (optimal on the
convex hull of the choices, so it may miss a cheaper point between two; the result with the
task split is never worse than without).

    >>> cost = np.array([[2.0, 2.0], [1.0, 1.0]]); q = np.array([[1.0, 1.0], [1.0, 0.0]])
    >>> r = oracle(cost, q, np.array([5.0, 50.0]), np.array([800.0, 800.0]), np.array(["a", "a"]), 0, 0.01)
    >>> round(r.cost_cut, 2)
    0.25
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

ENUMERATE_LIMIT = 20_000


@dataclass(frozen=True)
class OracleResult:
    assignment: np.ndarray  # route index per image
    cost: float  # mean cost per image under the oracle's rules
    quality: float
    baseline_cost: float
    baseline_quality: float
    text_cuts: tuple[float, ...]
    side_cuts: tuple[float, ...]
    by_task: bool

    @property
    def cost_cut(self) -> float:
        return 1.0 - self.cost / self.baseline_cost if self.baseline_cost > 0 else 0.0

    def routes_used(self) -> set[int]:
        return {int(r) for r in np.unique(self.assignment)}


def grids(permille: np.ndarray, long_side: np.ndarray) -> tuple[list[float], list[float]]:
    """Candidate cut points: the same quantiles ``SearchSpace.from_data`` draws from."""
    th = permille[~np.isnan(permille)]
    text = sorted({round(float(q), 2) for q in np.quantile(th, np.linspace(0.1, 0.9, 9))}) if len(th) else []
    side = sorted({float(int(q)) for q in np.quantile(long_side, np.linspace(0.2, 0.8, 4))}) if len(long_side) else []
    return text, side


def rule_keys(permille: np.ndarray, long_side: np.ndarray, text_cuts: tuple[float, ...],
              side_cuts: tuple[float, ...]) -> np.ndarray:
    """Which cell of the cuts each image falls in, comparable across image sets (no task)."""
    t = np.searchsorted(np.asarray(text_cuts), np.nan_to_num(permille, nan=0.0), side="right")
    s = np.searchsorted(np.asarray(side_cuts), long_side, side="right")
    return np.where(np.isnan(permille), -1, t * (len(side_cuts) + 1) + s)


def bucket_ids(permille: np.ndarray, long_side: np.ndarray, task: np.ndarray, text_cuts: tuple[float, ...],
               side_cuts: tuple[float, ...], by_task: bool) -> np.ndarray:
    """One bucket id per image; images without a text estimate share their own bucket."""
    b = rule_keys(permille, long_side, text_cuts, side_cuts)
    if by_task:
        _, task_id = np.unique(task, return_inverse=True)
        b = (b + 1) * 16 + task_id
    return np.unique(b, return_inverse=True)[1]


def apply_rules(result: OracleResult, permille: np.ndarray, long_side: np.ndarray, chosen_on: tuple[np.ndarray, np.ndarray],
                baseline: int) -> np.ndarray:
    """The route per image of another image set under ``result``'s rules (without a task split).

    ``chosen_on`` is the (permille, long_side) of the images the oracle chose on; a cell of its
    cuts that held none of them has no route of its own and keeps the baseline.
    """
    if result.by_task:
        raise ValueError("rules split by task are not carried to other images here")
    seen = rule_keys(*chosen_on, result.text_cuts, result.side_cuts)
    route_of = {int(k): int(r) for k, r in zip(seen, result.assignment, strict=True)}
    keys = rule_keys(permille, long_side, result.text_cuts, result.side_cuts)
    return np.array([route_of.get(int(k), baseline) for k in keys], dtype=np.int64)


def cheapest_choice(cost_b: np.ndarray, qual_b: np.ndarray, floor: float) -> np.ndarray | None:
    """Route per bucket minimising total cost with total quality ≥ ``floor`` ([B, R] sums), or
    None when no choice reaches it."""
    n_b, n_r = cost_b.shape
    if n_r ** n_b <= ENUMERATE_LIMIT:
        combos = np.array(list(itertools.product(range(n_r), repeat=n_b)), dtype=np.int64)
        rows = np.arange(n_b)
        c = cost_b[rows, combos].sum(axis=1)
        q = qual_b[rows, combos].sum(axis=1)
        ok = q >= floor - 1e-9
        return combos[np.flatnonzero(ok)[np.argmin(c[ok])]] if ok.any() else None
    best: np.ndarray | None = None
    best_cost = np.inf
    scale = max(float(np.abs(cost_b).max()), 1e-12)
    for lam in np.concatenate([[0.0], np.geomspace(1e-4, 1e4, 400)]) * scale:
        choice = np.argmin(cost_b - lam * qual_b, axis=1)
        rows = np.arange(n_b)
        if qual_b[rows, choice].sum() >= floor - 1e-9 and cost_b[rows, choice].sum() < best_cost:
            best, best_cost = choice, float(cost_b[rows, choice].sum())
    return best


def oracle(cost: np.ndarray, quality: np.ndarray, permille: np.ndarray, long_side: np.ndarray, task: np.ndarray,
           baseline: int, tolerance: float, *, by_task: bool = False, max_text_cuts: int = 2,
           max_side_cuts: int = 1) -> OracleResult:
    """The cheapest rules (see the module docstring) on ``cost[r, i]`` and ``quality[r, i]``."""
    n = cost.shape[1]
    base_cost, base_q = float(cost[baseline].mean()), float(quality[baseline].mean())
    floor = (base_q - tolerance) * n
    text_grid, side_grid = grids(permille, long_side)
    best = OracleResult(np.full(n, baseline), base_cost, base_q, base_cost, base_q, (), (), by_task)
    if by_task:  # rules without a task split are rules with one too; the sweep alone may miss them
        best = oracle(cost, quality, permille, long_side, task, baseline, tolerance,
                      max_text_cuts=max_text_cuts, max_side_cuts=max_side_cuts)
    for k in range(max_text_cuts + 1):
        for tcuts in itertools.combinations(text_grid, k):
            for j in range(max_side_cuts + 1):
                for scuts in itertools.combinations(side_grid, j):
                    b = bucket_ids(permille, long_side, task, tcuts, scuts, by_task)
                    n_b = int(b.max()) + 1
                    cost_b = np.stack([np.bincount(b, cost[r], n_b) for r in range(cost.shape[0])], axis=1)
                    qual_b = np.stack([np.bincount(b, quality[r], n_b) for r in range(cost.shape[0])], axis=1)
                    choice = cheapest_choice(cost_b, qual_b, floor)
                    if choice is None:
                        continue
                    assignment = choice[b]
                    c = float(cost[assignment, np.arange(n)].mean())
                    if c < best.cost - 1e-15:
                        best = OracleResult(assignment, c, float(quality[assignment, np.arange(n)].mean()),
                                            base_cost, base_q, tcuts, scuts, by_task)
    return best


#: Margins tried, smallest first, when the oracle must choose without hindsight: rules are then
#: chosen at ``tolerance − margin`` so that they hold on images they were not chosen on.
MARGINS = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05)


def _halves(n: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    idx = np.arange(n)
    return (idx[0::2], idx[1::2]), (idx[1::2], idx[0::2])


def _carried(cost: np.ndarray, quality: np.ndarray, permille: np.ndarray, long_side: np.ndarray, task: np.ndarray,
             baseline: int, tolerance: float, fit: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The routes of the ``test`` images under the oracle's rules chosen on the ``fit`` images."""
    rules = oracle(cost[:, fit], quality[:, fit], permille[fit], long_side[fit], task[fit], baseline, tolerance)
    return apply_rules(rules, permille[test], long_side[test], (permille[fit], long_side[fit]), baseline)


def cross_applied(cost: np.ndarray, quality: np.ndarray, permille: np.ndarray, long_side: np.ndarray,
                  task: np.ndarray, baseline: int, tolerance: float) -> np.ndarray:
    """Each half routed by the oracle's rules (at ``tolerance``) chosen on the other half."""
    chosen = np.full(cost.shape[1], baseline, dtype=np.int64)
    for fit, test in _halves(cost.shape[1]):
        chosen[test] = _carried(cost, quality, permille, long_side, task, baseline, tolerance, fit, test)
    return chosen


def margin_for(cost: np.ndarray, quality: np.ndarray, permille: np.ndarray, long_side: np.ndarray, task: np.ndarray,
               baseline: int, tolerance: float, margins: tuple[float, ...] = MARGINS) -> float | None:
    """The smallest margin whose rules, chosen on one half of these images at ``tolerance −
    margin``, keep the other half's mean quality within ``tolerance`` of the baseline's (both
    ways, scored over all); None when no margin does."""
    cols = np.arange(cost.shape[1])
    for margin in margins:
        chosen = cross_applied(cost, quality, permille, long_side, task, baseline, tolerance - margin)
        if (quality[chosen, cols] - quality[baseline, cols]).mean() >= -tolerance - 1e-12:
            return margin
    return None


def held_out_reference(cost: np.ndarray, quality: np.ndarray, permille: np.ndarray, long_side: np.ndarray,
                       task: np.ndarray, baseline: int, tolerance: float,
                       margins: tuple[float, ...] = MARGINS) -> tuple[np.ndarray, tuple[float | None, float | None]]:
    """A route per image, each chosen without seeing that image: the savings a rule-maker with
    every answer on half of the images could keep on the other half.

    For each half, the margin is chosen on the *other* half alone (``margin_for``, which splits
    it again), and the oracle's rules on that other half at ``tolerance − margin`` route this
    half; where no margin holds, this half keeps the baseline. Returns the routes and the two
    margins. Unlike ``oracle``, whose rules are scored on the images they were chosen on, this
    is a reference a loop that must hold on fresh traffic can be compared with.
    """
    chosen = np.full(cost.shape[1], baseline, dtype=np.int64)
    picked: list[float | None] = []
    for fit, test in _halves(cost.shape[1]):
        margin = margin_for(cost[:, fit], quality[:, fit], permille[fit], long_side[fit], task[fit], baseline,
                            tolerance, margins)
        picked.append(margin)
        if margin is not None:
            chosen[test] = _carried(cost, quality, permille, long_side, task, baseline, tolerance - margin, fit, test)
    return chosen, (picked[0], picked[1])
