"""Anytime-valid comparison of a canary against the active ruleset. Pure: numpy in, numbers out.

The data are time-ordered observations in [0, 1] (an eval score, or 1 − error), each tagged
canary or active. They are cut into groups, each a run of canary observations followed by the
run of active ones that came after it, and a group's difference
``D = mean(canary) − mean(active)`` is in [−1, 1] with mean ``Δ = μ_canary − μ_active`` (the
arm is a hash of the request, independent of its outcome). Pairing each canary observation
with the active traffic of the same moment also cancels slow drifts in the traffic mix.

Two one-sided tests run on the groups, each a betting e-process (a nonnegative
supermartingale under its null, so by Ville's inequality it ever reaches ``1/level`` with
probability at most ``level``, however often it is looked at):

* rollback: H0 ``Δ ≥ −margin``; wealth ``∏ (1 + λ_t (−margin − D_t))``; crossing ``1/α``.
* promote: H0 ``Δ ≤ −delta``; wealth ``∏ (1 + λ_t (D_t + delta))``; crossing ``1/β``.

The bet ``λ_t = g_t / (σ̂²_{t−1} s_t + g_t²)``, with the group's ``s_t = 1/n_canary + 1/n_active``,
is the growth-optimal bet for a drift ``g_t`` away from the test's null (for pass/fail data
close to Wald's SPRT with p0/p1). ``g_t`` is at least ``delta − margin``, the distance to the
other hypothesis's boundary, and the distance of the earlier groups' mean ``D̄_{t−1}`` from the
test's own boundary when that is further out (``−margin − D̄`` for rollback; for promote
``D̄ + delta`` less one standard error of ``D̄``, so that noise does not over-bet): a canary
that loses ten points is rolled back at the pace of a ten-point loss, not of a δ-point one,
and a clearly better one is promoted sooner; that matters most when δ is small. The mean and
the variance estimates use earlier groups only and the group sizes depend on the arms only, so
the bet is predictable and any data-driven choice stays valid. It is capped so that no single
group can ruin the wealth. Hence

    P(rollback | Δ ≥ −margin) ≤ α        P(promote | Δ ≤ −delta) ≤ β

and a drop between ``margin`` and ``delta`` may go either way. When neither test has
decided after ``max_canary`` canary observations the canary is rolled back (it never got
promoted without evidence).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

Action = Literal["promote", "rollback", "extend", "idle"]
_CODES = {0: "extend", 1: "rollback", 2: "promote"}


@dataclass(frozen=True)
class SequentialConfig:
    """``alpha``: rollback error for a canary no worse than ``margin`` (shared by all quality
    metrics); ``beta``: promote error for a canary worse by ``delta`` or more (each metric)."""

    alpha: float = 0.005
    beta: float = 0.03
    delta: float = 0.05
    margin: float = 0.0
    max_canary: int = 3000
    prior_var: float = 0.25
    bet_cap: float = 0.75
    max_cost_increase: float | None = 0.25
    min_cost_samples: int = 50

    def __post_init__(self) -> None:
        if not (0 < self.alpha < 1 and 0 < self.beta < 1):
            raise ValueError("alpha and beta must be in (0, 1)")
        if not 0 <= self.margin < self.delta < 1:
            raise ValueError("need 0 <= margin < delta < 1")
        if not 0 < self.bet_cap < 1 or self.prior_var <= 0 or self.max_canary < 1:
            raise ValueError("bet_cap in (0, 1), prior_var > 0 and max_canary >= 1 required")


@dataclass(frozen=True)
class Decision:
    action: Action
    statistics: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


class Groups(NamedTuple):
    """Per closed group: the difference ``d``, the cumulative canary count ``counts`` and
    ``scale = 1/n_canary + 1/n_active`` (Var(d) = σ² · scale for per-observation variance σ²)."""

    d: NDArray[np.float64]
    counts: NDArray[np.int64]
    scale: NDArray[np.float64]


def group_differences(is_canary: ArrayLike, values: ArrayLike) -> Groups:
    """Per closed group: ``D``, the cumulative number of canary observations and the scale.

    Works on one stream (shape ``(n,)``) or on many at once (``(runs, n)``); groups are
    left-aligned and padded with NaN (and the last count). The still-open last group and
    active observations before the first canary are left out.
    """
    arm = np.atleast_2d(np.asarray(is_canary, dtype=bool))
    val = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if arm.shape != val.shape:
        raise ValueError("is_canary and values must have the same shape")
    if np.any(~np.isfinite(val)) or np.any((val < 0) | (val > 1)):
        raise ValueError("values must be finite and in [0, 1]")
    runs, n = arm.shape
    prev = np.concatenate([np.zeros((runs, 1), dtype=bool), arm[:, :-1]], axis=1)
    starts = arm & ~prev
    gid = np.cumsum(starts, axis=1) - 1  # -1 before the first canary
    closed = gid < (gid[:, -1:] if n else gid)  # the last group may still grow
    keep = (gid >= 0) & closed
    flat = (np.arange(runs)[:, None] * max(n, 1) + gid)[keep]
    size = runs * max(n, 1)
    arm_k, val_k = arm[keep], val[keep]
    n_c = np.bincount(flat, weights=arm_k, minlength=size).reshape(runs, -1)
    n_a = np.bincount(flat, weights=~arm_k, minlength=size).reshape(runs, -1)
    s_c = np.bincount(flat, weights=val_k * arm_k, minlength=size).reshape(runs, -1)
    s_a = np.bincount(flat, weights=val_k * ~arm_k, minlength=size).reshape(runs, -1)
    valid = n_a > 0  # every closed group has both; unused slots have neither
    with np.errstate(invalid="ignore", divide="ignore"):
        d = np.where(valid, s_c / np.maximum(n_c, 1) - s_a / np.maximum(n_a, 1), np.nan)
    counts = np.cumsum(n_c, axis=1).astype(np.int64)
    scale = np.where(valid, 1.0 / np.maximum(n_c, 1) + 1.0 / np.maximum(n_a, 1), 1.0)
    if np.ndim(is_canary) == 1:
        return Groups(d[0], counts[0], scale[0])
    return Groups(d, counts, scale)


def log_wealth(
    d: NDArray[np.float64], config: SequentialConfig, scale: NDArray[np.float64] | None = None
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Log-wealth paths of the rollback and the promote e-process along the last axis.

    ``scale`` (from :class:`Groups`) lets a group with more observations carry a larger bet;
    the group sizes depend only on the arms, never on outcomes, so the bet stays predictable.
    """
    valid = ~np.isnan(d)
    x = np.where(valid, d, 0.0)
    w = np.ones_like(x) if scale is None else np.where(valid, scale, 1.0)
    t = np.arange(x.shape[-1], dtype=np.float64)
    before = np.cumsum(x, axis=-1) - x
    mean_before = before / (t + 1.0)  # shrunk towards "no difference" by one pseudo-group
    sq = np.where(valid, (x - mean_before) ** 2 / w, 0.0)  # per-observation variance estimates
    sigma2 = (config.prior_var + np.cumsum(sq, axis=-1) - sq) / (t + 1.0)
    gap = config.delta - config.margin
    # Each test bets on the drift the earlier groups show against its own null when that is
    # beyond the gap, so a ten-point loss is rolled back at a ten-point pace. The promote side
    # takes the earlier mean less one standard error: with the mean itself, noise above zero
    # over-bet and equal canaries took longer (benchmarks.sequential: paired at δ = 0.01,
    # median 750 against 698 pairs; two arms, 418 against 344); this way they cost 730 and 350
    # and a clearly better canary is still promoted sooner.
    drift_r = np.maximum(gap, -config.margin - mean_before)
    drift_p = np.maximum(gap, mean_before + config.delta - np.sqrt(sigma2 * w / (t + 1.0)))
    lam_r = np.minimum(drift_r / (sigma2 * w + drift_r**2), config.bet_cap / (1.0 + config.margin))
    lam_p = np.minimum(drift_p / (sigma2 * w + drift_p**2), config.bet_cap / (1.0 - config.delta))
    step_r = np.where(valid, np.log1p(lam_r * (-config.margin - x)), 0.0)
    step_p = np.where(valid, np.log1p(lam_p * (x + config.delta)), 0.0)
    return np.cumsum(step_r, axis=-1), np.cumsum(step_p, axis=-1)


def _first(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Index of the first True along the last axis, or a huge number when there is none."""
    big = np.iinfo(np.int64).max
    if mask.shape[-1] == 0:  # no observation yet (a canary whose first pairs are still in flight)
        return np.full(mask.shape[:-1], big, dtype=np.int64)
    return np.where(mask.any(axis=-1), mask.argmax(axis=-1), big)


def outcomes(
    groups: Groups, config: SequentialConfig, alpha: float | None = None
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Per stream: action code (0 extend, 1 rollback, 2 promote), the deciding group index
    (-1 if none), and the largest log-wealth of the rollback and promote tests."""
    d, counts, scale = groups
    log_r, log_p = log_wealth(d, config, scale)
    big = np.iinfo(np.int64).max
    t_r = _first(log_r >= math.log(1.0 / (alpha or config.alpha)))
    t_p = _first(log_p >= math.log(1.0 / config.beta))
    t_cap = _first((counts >= config.max_canary) & ~np.isnan(d))
    t_stop = np.minimum(np.minimum(t_r, t_p), t_cap)
    # Ties go to rollback; reaching the cap undecided rolls back too.
    code = np.select([t_stop == big, t_r == t_stop, t_p == t_stop], [0, 1, 2], default=1)
    stop = np.where(t_stop == big, -1, t_stop)
    return code.astype(np.int64), stop.astype(np.int64), log_r.max(axis=-1, initial=0.0), log_p.max(
        axis=-1, initial=0.0
    )


@dataclass(frozen=True)
class MetricResult:
    name: str
    action: Action
    statistics: dict[str, Any]


def _test_statistics(
    log_r: NDArray[np.float64], log_p: NDArray[np.float64], max_r: NDArray[np.float64], max_p: NDArray[np.float64],
    groups: int, stop: NDArray[np.int64], counts: NDArray[np.int64], config: SequentialConfig, alpha: float | None,
) -> dict[str, Any]:
    """The e-values, thresholds and decision point of one stream, as recorded with a decision."""
    return {
        "e_rollback": float(math.exp(min(float(max_r[0]), 700.0))),
        "e_promote": float(math.exp(min(float(max_p[0]), 700.0))),
        "e_rollback_now": float(math.exp(min(float(log_r[groups - 1]), 700.0))) if groups else 1.0,
        "e_promote_now": float(math.exp(min(float(log_p[groups - 1]), 700.0))) if groups else 1.0,
        "threshold_rollback": 1.0 / (alpha or config.alpha),
        "threshold_promote": 1.0 / config.beta,
        "decided_at_group": int(stop[0]) if stop[0] >= 0 else None,
        "canary_at_decision": int(counts[stop[0]]) if stop[0] >= 0 else None,
    }


def evaluate_metric(
    name: str, is_canary: ArrayLike, values: ArrayLike, config: SequentialConfig, alpha: float | None = None
) -> MetricResult:
    """The sequential decision for one quality metric on one time-ordered stream."""
    arm = np.asarray(is_canary, dtype=bool).reshape(-1)
    val = np.asarray(values, dtype=np.float64).reshape(-1)
    d, counts, scale = group_differences(arm, val)
    code, stop, max_r, max_p = outcomes(Groups(d[None, :], counts[None, :], scale[None, :]), config, alpha)
    groups = int(np.count_nonzero(~np.isnan(d)))
    log_r, log_p = log_wealth(d, config, scale)
    stats: dict[str, Any] = {
        "n_canary": int(arm.sum()),
        "n_active": int((~arm).sum()),
        "mean_canary": float(val[arm].mean()) if arm.any() else None,
        "mean_active": float(val[~arm].mean()) if (~arm).any() else None,
        "groups": groups,
        "mean_group_diff": float(np.nanmean(d)) if groups else None,
        **_test_statistics(log_r, log_p, max_r, max_p, groups, stop, counts, config, alpha),
    }
    if stats["mean_canary"] is not None and stats["mean_active"] is not None:
        stats["diff"] = stats["mean_canary"] - stats["mean_active"]
    return MetricResult(name, _CODES[int(code[0])], stats)  # type: ignore[arg-type]


def evaluate_paired_metric(
    name: str, canary: ArrayLike, shadow: ArrayLike, config: SequentialConfig, alpha: float | None = None
) -> MetricResult:
    """The sequential decision on pairs: each canary observation and a shadow of the same input
    on the active version (values in [0, 1]), in arrival order.

    Each difference is one group (in [−1, 1], mean Δ over inputs, independent across inputs),
    so the same two e-processes apply with scale 1 and the estimated variance is that of the
    difference itself. Where most inputs answer alike on both versions that variance is small
    and the tests decide after far fewer observations than two independent arms need."""
    c = np.asarray(canary, dtype=np.float64).reshape(-1)
    a = np.asarray(shadow, dtype=np.float64).reshape(-1)
    if c.shape != a.shape:
        raise ValueError("canary and shadow must have the same length")
    if np.any(~np.isfinite(c)) or np.any(~np.isfinite(a)) or np.any((c < 0) | (c > 1) | (a < 0) | (a > 1)):
        raise ValueError("values must be finite and in [0, 1]")
    d = c - a
    counts = np.arange(1, len(d) + 1, dtype=np.int64)
    scale = np.ones_like(d)
    code, stop, max_r, max_p = outcomes(Groups(d[None, :], counts[None, :], scale[None, :]), config, alpha)
    log_r, log_p = log_wealth(d, config, scale)
    n = len(d)
    stats: dict[str, Any] = {
        "paired": True,
        "n_canary": n,
        "n_active": n,
        "mean_canary": float(c.mean()) if n else None,
        "mean_active": float(a.mean()) if n else None,
        "groups": n,
        "mean_group_diff": float(d.mean()) if n else None,
        "diff": float(d.mean()) if n else None,
        **_test_statistics(log_r, log_p, max_r, max_p, n, stop, counts, config, alpha),
    }
    return MetricResult(name, _CODES[int(code[0])], stats)  # type: ignore[arg-type]


def cost_check(
    canary_cost: ArrayLike, active_cost: ArrayLike, config: SequentialConfig
) -> tuple[bool, dict[str, Any]]:
    """Guard rail on cost per image: True when the canary costs clearly more than allowed.

    Not a sequential test: cost follows from exact token math and has little noise, so the
    ratio of means after ``min_cost_samples`` canary images is compared with the limit.
    """
    c = np.asarray(canary_cost, dtype=np.float64)
    a = np.asarray(active_cost, dtype=np.float64)
    stats: dict[str, Any] = {"n_canary": int(c.size), "n_active": int(a.size)}
    if c.size == 0 or a.size == 0 or config.max_cost_increase is None:
        return False, stats
    mc, ma = float(c.mean()), float(a.mean())
    ratio = mc / ma if ma > 0 else (math.inf if mc > 0 else 1.0)
    stats.update(mean_canary=mc, mean_active=ma, ratio=ratio, limit=1.0 + config.max_cost_increase)
    return bool(c.size >= config.min_cost_samples and ratio > 1.0 + config.max_cost_increase), stats


def decide(
    results: Mapping[str, MetricResult],
    config: SequentialConfig,
    cost: tuple[bool, dict[str, Any]] | None = None,
) -> Decision:
    """Combine metrics: any rollback (or the cost rail) rolls back; promote needs every metric."""
    statistics: dict[str, Any] = {
        "config": {k: getattr(config, k) for k in ("alpha", "beta", "delta", "margin", "max_canary")},
        "metrics": {name: {"action": r.action, **r.statistics} for name, r in results.items()},
    }
    if cost is not None:
        statistics["cost_per_image"] = cost[1]
    if not results:
        return Decision("extend", statistics, "no observations yet")
    bad = [n for n, r in results.items() if r.action == "rollback"]
    if bad:
        parts = []
        for n in bad:
            s = results[n].statistics
            if s["e_rollback"] >= s["threshold_rollback"]:
                parts.append(f"{n}: canary {s['mean_canary']:.3f} vs active {s['mean_active']:.3f}, "
                             f"e={s['e_rollback']:.1f} ≥ {s['threshold_rollback']:.0f}")
            else:
                parts.append(f"{n}: no decision after {s['canary_at_decision']} canary observations")
        return Decision("rollback", statistics, "regression: " + "; ".join(parts))
    if cost is not None and cost[0]:
        s = cost[1]
        return Decision("rollback", statistics,
                        f"cost per image {s['ratio']:.2f}× active exceeds {s['limit']:.2f}×")
    if all(r.action == "promote" for r in results.values()):
        return Decision("promote", statistics, "no regression beyond "
                        f"{config.delta:g} on {', '.join(results)} (β={config.beta:g})")
    pending = [progress(n, r.statistics) for n, r in results.items() if r.action != "promote"]
    return Decision("extend", statistics, "undecided: " + "; ".join(pending))


def progress(name: str, stats: Mapping[str, Any]) -> str:
    """Where an undecided test stands: its evidence so far and each e-value against its
    threshold, so a long canary (δ at a 1-point tolerance needs hundreds of pairs) can be
    followed rather than only waited for."""
    unit = "pairs" if stats.get("paired") else "canary observations"
    means = ""
    if stats.get("mean_canary") is not None and stats.get("mean_active") is not None:
        means = f", canary {stats['mean_canary']:.3f} vs active {stats['mean_active']:.3f}"
    return (f"{name}: {stats.get('n_canary', 0)} {unit}{means}; e-values now: promote "
            f"{stats.get('e_promote_now', 1.0):.2g} of {stats.get('threshold_promote', 0):.0f}, rollback "
            f"{stats.get('e_rollback_now', 1.0):.2g} of {stats.get('threshold_rollback', 0):.0f}")


__all__ = [
    "Action",
    "Decision",
    "Groups",
    "MetricResult",
    "SequentialConfig",
    "cost_check",
    "decide",
    "group_differences",
    "log_wealth",
    "progress",
    "outcomes",
    "evaluate_metric",
    "evaluate_paired_metric",
]
