"""Optimisation over 50k logged images (goal ≤ 60 s on 2 cores).

    python -m benchmarks.optimizer [--images 50000] [--trials 300] [--exact-routes] [--cross-fit routes|search]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from optimizer.run import OptimizeSettings, optimize
from optimizer.synthetic import DEFAULT_REPLAY, synthetic_observations
from router.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--exact-routes", action="store_true", help="TPE searches the cuts; routes per bucket are exact")
    parser.add_argument("--cross-fit", choices=("off", "routes", "search"), default="off",
                        help="choose on one half of the images, certify on the other (optimizer.crossfit)")
    args = parser.parse_args(argv)
    catalog = load_config(ROOT / "examples" / "emulated.yaml").models
    t0 = time.perf_counter()
    obs = synthetic_observations(catalog, args.images, seed=1, replay_routes=DEFAULT_REPLAY, replay_every=10)
    t1 = time.perf_counter()
    p = optimize("unused", catalog, OptimizeSettings(trials=args.trials, seed=1, tolerance=0.01,
                                                         exact_routes=args.exact_routes,
                                                         cross_fit=args.cross_fit), observations=obs)
    t2 = time.perf_counter()
    print(f"{args.images} logged images, {obs.scored.height} scored rows, {len(p.search.points)} trials "
          f"(early stop: {p.search.stopped_early})")
    print(f"optimise: {t2 - t1:.1f} s (goal ≤ 60 s); data synthesis {t1 - t0:.1f} s")
    print(f"savings {p.savings:.1%} at predicted quality {p.predicted_quality:.4f} vs baseline {p.baseline_quality:.4f}")


if __name__ == "__main__":
    main()
