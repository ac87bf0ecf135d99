"""The cheapest route per bucket for given cuts, exactly: a multiple-choice knapsack.

Once the cuts are fixed, the search's bound is separable per bucket except for its sampling
terms: the predicted change of each bucket (capped at zero with ``losses_only``) and the
unseen-failure allowance of each move (``search.evaluate_bounds``). Choosing one route per
bucket to minimise cost under a budget on that separable loss is a small multiple-choice
knapsack (at most ten buckets of a few routes). It is solved exactly by merging the buckets'
(cost, loss) options into a Pareto front (Nemhauser–Ullmann), so a sampler only has to search
the cuts. The terms that are not separable (the bootstrap shortfall, the overall bound's
sampling error) are checked afterwards with the full bound, walking the front towards smaller
losses (bisection) until the whole bound holds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from optimizer.search import Matrices, evaluate_bounds
from optimizer.space import Policy, buckets

_EPS = 1e-12  # float slack when comparing summed losses with the budget


@dataclass(frozen=True)
class Options:
    """Per bucket b and route r: the mean cost per image and the separable loss of the bound
    (what sending bucket b to route r subtracts from the bound, ≥ 0 with ``losses_only``)."""

    cost: np.ndarray  # [B, R]
    loss: np.ndarray  # [B, R]
    slack: float  # the budget: the bound's start less the floor


@dataclass(frozen=True)
class Front:
    """Non-dominated assignments sorted by cost ascending (so loss descending); ``choice[f, b]``
    is the route of bucket b in assignment f."""

    cost: np.ndarray
    loss: np.ndarray
    choice: np.ndarray


def with_routes(policy: Policy, table: np.ndarray) -> Policy:
    """``policy`` with its route table (in ``Policy.route_table`` order) replaced by ``table``."""
    n = len(policy.bucket_routes)
    values = tuple(int(r) for r in table)
    return replace(policy, bucket_routes=values[:n], unknown_route=values[n], task_routes=values[n + 1:])


def bucket_options(policy: Policy, m: Matrices, floor: float) -> Options:
    """Each bucket's cost and separable bound loss on every route, for the cuts of ``policy``."""
    n_routes, n_images = m.cost.shape
    n_buckets = len(policy.route_table)
    bucket = buckets(policy, m.text_permille, m.long_side, m.task)
    cost = np.stack([np.bincount(bucket, weights=m.cost[r], minlength=n_buckets) for r in range(n_routes)], axis=1)
    if m.current is None:
        # No reference routes: the constraint is the predicted mean quality itself.
        gain = np.stack([np.bincount(bucket, weights=m.quality[r], minlength=n_buckets) for r in range(n_routes)], axis=1)
        return Options(cost / n_images, -gain / n_images, -floor)
    cols = np.arange(n_images)
    now = m.quality[m.current, cols]
    change = np.stack([np.bincount(bucket, weights=m.quality[r] - now, minlength=n_buckets) for r in range(n_routes)],
                      axis=1)
    loss = -np.minimum(change, 0.0) if m.losses_only else -change
    if m.evidence is not None and m.unseen_loss > 0:
        size = np.bincount(bucket, minlength=n_buckets).astype(float)
        moved = size[:, None] - np.stack([np.bincount(bucket, weights=m.current == r, minlength=n_buckets)
                                          for r in range(n_routes)], axis=1)
        ev_route, ev_permille, ev_side = m.evidence
        ev_bucket = buckets(policy, ev_permille, ev_side, m.evidence_task)
        seen = np.zeros((n_buckets, n_routes))
        np.add.at(seen, (ev_bucket, ev_route), 1.0)
        loss = loss + m.unseen_loss * moved / (seen + 1.0)
    return Options(cost / n_images, loss / n_images, float(now.mean()) - floor)


def pareto_front(options: Options, fixed: dict[int, int] | None = None) -> Front:
    """Every assignment not dominated in (cost, loss) whose loss can still meet the budget.

    Buckets are merged one at a time; a partial assignment is kept only if no other one is both
    cheaper (or as cheap) and loses less, and if its loss plus the least the remaining buckets
    can lose fits the budget. Buckets in ``fixed`` get only their given route."""
    n_buckets, n_routes = options.cost.shape
    allowed = np.ones((n_buckets, n_routes), dtype=bool)
    for b, r in (fixed or {}).items():
        allowed[b] = False
        allowed[b, r] = True
    loss = np.where(allowed, options.loss, np.inf)
    rest = np.concatenate([np.cumsum(loss.min(axis=1)[::-1])[::-1][1:], [0.0]])
    cost_f, loss_f, choice = np.zeros(1), np.zeros(1), np.zeros((1, 0), dtype=np.int64)
    for b in range(n_buckets):
        c = (cost_f[:, None] + options.cost[b][None, :]).ravel()
        q = (loss_f[:, None] + loss[b][None, :]).ravel()
        parent, pick = np.divmod(np.arange(len(c)), n_routes)
        fits = np.isfinite(q) & (q + rest[b] <= options.slack + _EPS)
        if not fits.any():  # nothing meets the budget: keep the least-loss assignments only
            fits = np.isfinite(q) & (q + rest[b] <= np.min(q[np.isfinite(q)]) + rest[b] + _EPS)
        c, q, parent, pick = c[fits], q[fits], parent[fits], pick[fits]
        order = np.lexsort((pick, q, c))  # cheapest first; ties to the lower loss, then route order
        c, q, parent, pick = c[order], q[order], parent[order], pick[order]
        best_before = np.concatenate([[np.inf], np.minimum.accumulate(q)[:-1]])
        keep = q < best_before - _EPS
        cost_f, loss_f = c[keep], q[keep]
        choice = np.concatenate([choice[parent[keep]], pick[keep][:, None]], axis=1)
    return Front(cost_f, loss_f, choice)


def cheapest_routes(policy: Policy, m: Matrices, floor: float) -> tuple[Policy, tuple[float, float, float]]:
    """The cheapest route assignment for the cuts of ``policy`` whose full bound meets ``floor``,
    with its (cost, quality, lower bound); when none does, the least-loss one (infeasible).

    Empty buckets keep the reference route (the most common current route): the training data
    says nothing about them, and they carry no cost or loss here."""
    options = bucket_options(policy, m, floor)
    size = np.bincount(buckets(policy, m.text_permille, m.long_side, m.task), minlength=len(policy.route_table))
    reference = int(np.bincount(m.current).argmax()) if m.current is not None else int(m.quality.mean(axis=1).argmax())
    front = pareto_front(options, {int(b): reference for b in np.flatnonzero(size == 0)})
    within = np.flatnonzero(front.loss <= options.slack + _EPS)

    def at(f: int) -> tuple[Policy, tuple[float, float, float]]:
        candidate = with_routes(policy, front.choice[f])
        return candidate, evaluate_bounds(candidate, m)

    lo = int(within[0]) if len(within) else len(front.cost) - 1
    first = at(lo)
    if first[1][2] >= floor or lo == len(front.cost) - 1:
        return first
    last = at(len(front.cost) - 1)
    if last[1][2] < floor:
        return last
    hi, best = len(front.cost) - 1, last  # invariant: ``lo`` fails the full bound, ``hi`` meets it
    while hi - lo > 1:
        mid = (lo + hi) // 2
        found = at(mid)
        if found[1][2] >= floor:
            hi, best = mid, found
        else:
            lo = mid
    return best
