"""How a proposal trades cost for quality: Pareto front, plot, and RouteLLM-style numbers.

RouteLLM reports routers by the share of calls that must go to the strong model to reach a
given quality, and by APGR, the average over the cost range of the performance gap recovered:
``PGR(π) = (q(π) − q_weak) / (q_strong − q_weak)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TradeOff:
    strong_share: list[float]  # share of requests routed to the strong route, per front point
    pgr: list[float]
    apgr: float
    share_for_95: float | None  # strong-route share needed to reach 95 % of the strong quality gap


def trade_off(points: Sequence[tuple[float, float]], strong_quality: float, weak_quality: float) -> TradeOff:
    """``points``: (strong-route call share, quality) of policies along the front."""
    gap = strong_quality - weak_quality
    pts = sorted(points)
    shares = [0.0] + [s for s, _ in pts] + [1.0]
    pgr_vals = [0.0] + [((q - weak_quality) / gap) if gap > 1e-9 else 1.0 for _, q in pts] + [1.0]
    # Best PGR achievable at or below each share (a router may always spend less than allowed).
    best = list(np.maximum.accumulate(np.clip(pgr_vals, -1.0, 2.0)))
    area = float(sum((shares[k + 1] - shares[k]) * best[k] for k in range(len(shares) - 1)))
    share_95 = next((s for s, g in zip(shares, best, strict=True) if g >= 0.95), None)
    return TradeOff(shares, [float(x) for x in best], area, share_95)


def plot_front(
    all_points: Sequence[tuple[float, float]],
    front: Sequence[tuple[float, float]],
    baseline: tuple[float, float],
    chosen: tuple[float, float] | None,
    out: Path,
) -> Path:
    """Scatter of every trial, the Pareto front, the baseline and the chosen ruleset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    if all_points:
        xs, ys = zip(*all_points, strict=True)
        ax.scatter([x * 1000 for x in xs], ys, s=8, alpha=0.35, label="trials")
    if front:
        fx, fy = zip(*front, strict=True)
        ax.plot([x * 1000 for x in fx], fy, "-o", ms=3, color="tab:orange", label="Pareto front")
    ax.scatter([baseline[0] * 1000], [baseline[1]], marker="s", s=60, color="black", label="baseline")
    if chosen:
        ax.scatter([chosen[0] * 1000], [chosen[1]], marker="*", s=160, color="tab:green", label="proposal")
    ax.set_xlabel("cost per request (USD × 1000)")
    ax.set_ylabel("predicted quality")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
