"""Error rates and speed of the guard's sequential test, by simulation.

Goals: an A/A rollout is rolled back in <= 1 % of runs; a 5-point regression is caught
(rolled back) in >= 95 %; at a 10 % canary fraction the median number of canary requests
to a decision is reported against the goal of <= 300. Run:
``python -m benchmarks.sequential [--runs 1000] [--fraction 0.1] [--seed 7]``.

Each run is a stream of requests split by a Bernoulli(fraction) arm, with outcomes drawn from
one of three models: pass/fail (Bernoulli), a continuous score with Beta noise (sd 0.1),
and a realistic mixture (mostly near-perfect OCR scores, some failures around 0.3). The
streams go through the same functions the guard uses (``group_differences``, ``outcomes``),
many runs at a time.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from router.rollout.sequential import Groups, SequentialConfig, group_differences, outcomes

Draw = Callable[[np.random.Generator, np.ndarray], np.ndarray]


def bernoulli(rng: np.random.Generator, p: np.ndarray) -> np.ndarray:
    return (rng.random(p.shape) < p).astype(np.float64)


def beta_noise(sd: float) -> Draw:
    def draw(rng: np.random.Generator, mean: np.ndarray) -> np.ndarray:
        k = mean * (1 - mean) / sd**2 - 1
        return rng.beta(mean * k, (1 - mean) * k)

    return draw


def ocr_mixture(rng: np.random.Generator, mean: np.ndarray) -> np.ndarray:
    """Good answers score ~0.96 (Beta(48, 2)); failures ~0.3 (Beta(3, 7)); mean sets the mix."""
    fail = rng.random(mean.shape) < (0.96 - mean) / 0.66
    return np.where(fail, rng.beta(3, 7, mean.shape), rng.beta(48, 2, mean.shape))


@dataclass(frozen=True)
class Scenario:
    name: str
    active: float
    canary: float
    draw: Draw


SCENARIOS = (
    Scenario("A/A pass/fail 0.90", 0.90, 0.90, bernoulli),
    Scenario("-5pt pass/fail 0.90→0.85", 0.90, 0.85, bernoulli),
    Scenario("A/A score 0.92 (sd .1)", 0.92, 0.92, beta_noise(0.1)),
    Scenario("-5pt score 0.92→0.87 (sd .1)", 0.92, 0.87, beta_noise(0.1)),
    Scenario("A/A OCR mixture 0.92", 0.92, 0.92, ocr_mixture),
    Scenario("-5pt OCR mixture 0.92→0.87", 0.92, 0.87, ocr_mixture),
)


def _decide(arm: np.ndarray, values: np.ndarray, cfg: SequentialConfig) -> tuple[np.ndarray, ...]:
    groups = group_differences(arm, values)
    code, stop, _, _ = outcomes(groups, cfg)
    counts = groups.counts
    used = np.take_along_axis(counts, np.maximum(stop, 0)[:, None], axis=1)[:, 0]
    # The deciding group closed when the next canary request arrived.
    seen = np.sum(np.cumsum(arm, axis=1) < used[:, None] + 1, axis=1)
    return code, stop, used, seen


def simulate(
    scenario: Scenario, runs: int, fraction: float, cfg: SequentialConfig, seed: int
) -> dict[str, float]:
    """Streams grow by doubling only for runs still undecided: a decision on a prefix uses
    closed groups only, which the longer stream keeps unchanged, so results are exact."""
    rng = np.random.default_rng(seed)
    horizon = int(math.ceil(cfg.max_canary / fraction * 1.15))
    code = np.zeros(runs, dtype=np.int64)
    canary_n = np.full(runs, -1)
    total_n = np.full(runs, -1)
    live = np.arange(runs)
    arm = np.zeros((runs, 0), dtype=bool)
    values = np.zeros((runs, 0))
    n = int(500 / fraction)
    while live.size:
        add = n - arm.shape[1]
        more = rng.random((live.size, add)) < fraction
        arm = np.concatenate([arm, more], axis=1)
        values = np.concatenate(
            [values, scenario.draw(rng, np.where(more, scenario.canary, scenario.active))], axis=1
        )
        c, stop, used, seen = _decide(arm, values, cfg)
        done = (stop >= 0) | (n >= horizon)
        code[live[done]] = c[done]
        canary_n[live[done]] = np.where(stop[done] >= 0, used[done], -1)
        total_n[live[done]] = np.where(stop[done] >= 0, seen[done], -1)
        live, arm, values = live[~done], arm[~done], values[~done]
        n = min(2 * n, horizon)
    decided = canary_n >= 0
    can, tot = canary_n[decided], total_n[decided]
    return {
        "rollback": float(np.mean(code == 1)),
        "promote": float(np.mean(code == 2)),
        "undecided": float(np.mean(code == 0)),
        "median_requests": float(np.median(tot)) if decided.any() else math.nan,
        "median_canary": float(np.median(can)) if decided.any() else math.nan,
        "p90_canary": float(np.percentile(can, 90)) if decided.any() else math.nan,
    }


@dataclass(frozen=True)
class PairedScenario:
    """Pairs of one image read by both versions. Each image is hard (read badly by any version)
    with probability ``hard``; otherwise a version slips on it with its own probability. A slip
    or a hard image scores ~0.3 (Beta(3, 7)), a good read ~0.96 (Beta(48, 2))."""

    name: str
    hard: float
    slip_active: float
    slip_canary: float


# Means: (1 - hard)(1 - slip)·0.96 + (hard + (1 - hard)·slip)·0.3 ≈ 0.92 for the A/A rows.
PAIRED_SCENARIOS = (
    PairedScenario("A/A paired, slips 2 %", 0.04, 0.02, 0.02),
    PairedScenario("-5pt paired (slips 2 %→10 %)", 0.04, 0.02, 0.0995),
)


def _paired_draw(rng: np.random.Generator, sc: PairedScenario, shape: tuple[int, int]) -> np.ndarray:
    hard = rng.random(shape) < sc.hard

    def read(slip: float) -> np.ndarray:
        bad = hard | (rng.random(shape) < slip)
        return np.where(bad, rng.beta(3, 7, shape), rng.beta(48, 2, shape))

    return read(sc.slip_canary) - read(sc.slip_active)


def simulate_paired(sc: PairedScenario, runs: int, shadow_fraction: float, cfg: SequentialConfig,
                    seed: int) -> dict[str, float]:
    """Canary requests until the paired guard decides, when ``shadow_fraction`` of them are
    shadowed on the active version (the guard tests the pairs only)."""
    rng = np.random.default_rng(seed)
    n = cfg.max_canary
    d = _paired_draw(rng, sc, (runs, n))
    counts = np.broadcast_to(np.arange(1, n + 1, dtype=np.int64), (runs, n))
    code, stop, _, _ = outcomes(Groups(d, counts, np.ones_like(d)), cfg)
    pairs = np.where(stop >= 0, stop + 1, -1)
    decided = pairs > 0
    # Pairs arrive at the shadow fraction of canary requests (a Bernoulli choice per request).
    canary = rng.negative_binomial(np.maximum(pairs, 1), shadow_fraction) + np.maximum(pairs, 1)
    can = canary[decided]
    return {
        "rollback": float(np.mean(code == 1)),
        "promote": float(np.mean(code == 2)),
        "undecided": float(np.mean(code == 0)),
        "median_pairs": float(np.median(pairs[decided])) if decided.any() else math.nan,
        "median_canary": float(np.median(can)) if decided.any() else math.nan,
        "p90_canary": float(np.percentile(can, 90)) if decided.any() else math.nan,
    }


def main_paired(args: argparse.Namespace, cfg: SequentialConfig) -> dict[str, dict[str, float]]:
    print(f"paired: alpha={cfg.alpha} beta={cfg.beta} delta={cfg.delta} shadow fraction={args.shadow_fraction} "
          f"runs={args.runs}")
    print(f"{'scenario':32s} {'rollback':>8s} {'promote':>8s} {'undec.':>7s} {'med pairs':>9s} "
          f"{'med can':>8s} {'p90 can':>8s}")
    results = {}
    for i, sc in enumerate(PAIRED_SCENARIOS):
        r = simulate_paired(sc, args.runs, args.shadow_fraction, cfg, seed=args.seed + i)
        results[sc.name] = r
        print(f"{sc.name:32s} {r['rollback']:8.3f} {r['promote']:8.3f} {r['undecided']:7.3f} "
              f"{r['median_pairs']:9.0f} {r['median_canary']:8.0f} {r['p90_canary']:8.0f}")
    equal = results[PAIRED_SCENARIOS[0].name]  # as good as the active version
    aa = equal["rollback"]
    bad = results[PAIRED_SCENARIOS[1].name]
    print(f"goal A/A false rollbacks <= 1 %: {aa:.1%} {'ok' if aa <= 0.01 else 'MISSED'}; "
          f"equal canary promoted, median <= 150 canary requests: {equal['median_canary']:.0f} "
          f"{'ok' if equal['median_canary'] <= 150 and equal['promote'] > 0.5 else 'MISSED'}; "
          f"-5pt rolled back, median <= 150: {bad['median_canary']:.0f} "
          f"{'ok' if bad['median_canary'] <= 150 and bad['rollback'] > 0.5 else 'MISSED'}")
    return results


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--alpha", type=float, default=SequentialConfig.alpha)
    p.add_argument("--beta", type=float, default=SequentialConfig.beta)
    p.add_argument("--delta", type=float, default=SequentialConfig.delta)
    p.add_argument("--paired", action="store_true", help="the paired guard, fed by gateway shadows")
    p.add_argument("--shadow-fraction", type=float, default=1.0)
    args = p.parse_args(argv)
    cfg = SequentialConfig(alpha=args.alpha, beta=args.beta, delta=args.delta)
    if args.paired:
        return main_paired(args, cfg)
    print(f"alpha={cfg.alpha} beta={cfg.beta} delta={cfg.delta} margin={cfg.margin} "
          f"max_canary={cfg.max_canary} canary fraction={args.fraction} runs={args.runs}")
    print(f"{'scenario':32s} {'rollback':>8s} {'promote':>8s} {'undec.':>7s} "
          f"{'med req':>8s} {'med can':>8s} {'p90 can':>8s} {'secs':>5s}")
    results = {}
    for i, sc in enumerate(SCENARIOS):
        t0 = time.perf_counter()
        r = simulate(sc, args.runs, args.fraction, cfg, seed=args.seed + i)
        secs = time.perf_counter() - t0
        results[sc.name] = {**r, "seconds": secs}
        print(f"{sc.name:32s} {r['rollback']:8.3f} {r['promote']:8.3f} {r['undecided']:7.3f} "
              f"{r['median_requests']:8.0f} {r['median_canary']:8.0f} {r['p90_canary']:8.0f} {secs:5.1f}")
    aa = max(v["rollback"] for k, v in results.items() if k.startswith("A/A"))
    caught = min(v["rollback"] for k, v in results.items() if k.startswith("-5pt"))
    meds = {k: v["median_canary"] for k, v in results.items() if k.startswith("-5pt")}
    print(f"goal A/A rollback <= 1 %: {aa:.1%} {'ok' if aa <= 0.01 else 'MISSED'}; "
          f"goal -5pt caught >= 95 %: {caught:.1%} {'ok' if caught >= 0.95 else 'MISSED'}; "
          "goal median canary requests <= 300: "
          + ", ".join(f"{k.split(' ', 1)[1]} {m:.0f} {'ok' if m <= 300 else 'MISSED'}" for k, m in meds.items()))
    return results


if __name__ == "__main__":
    main()
