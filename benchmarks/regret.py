"""The loop's regret in each emulated world: its realised savings against the oracle's.

    python -m benchmarks.regret [--train 30] [--fresh 30] [--seed 7] [--worlds pixels flat ...]

Per world: a training workload goes to the baseline route (gpt-4o, high) and is replayed on the
demo's three cheaper routes; the optimizer proposes rules from those scores (as in the demo);
the proposal then meets fresh traffic (seed + 1), each image paired with its baseline answer,
and the guard's paired sequential test (the rollout defaults' δ and β; the former
δ = 0.03 and δ = 0.10 shown beside it) promotes or rolls it back. The
oracle reads every fresh image on every candidate route and finds the cheapest rules over the
router's features within the same tolerance (``optimizer.oracle``), in hindsight; it is also
scored held out (rules chosen on one half of the fresh images, applied to the other), which shows
how much of its cut survives traffic it did not choose on. The **reference held out** goes one
step further (``optimizer.oracle.held_out_reference``): each half is routed by rules chosen on the
other half with a margin that other half chose for itself, so that its cut is one a rule-maker
could keep on images it did not see; the loop's deployed cut is shown as a share of it too. In
``adversarial`` the
training mix has no tabular reports and the fresh mix a third of them: the world's cheap route
fails on exactly that part. Reads go through the emulator's answerer in-process, with the OCR
disk cache, so a rerun costs seconds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from benchmarks.world_reads import Item, WorldReader, load_items
from emulator.models import build_model_table
from emulator.workload import DEFAULT_MIX, generate_workload
from emulator.worlds import WORLDS, get_world
from optimizer.data import Observations
from optimizer.oracle import OracleResult, cross_applied, held_out_reference, oracle
from optimizer.replay import stratified_sample, targeted_sample
from optimizer.routes import Route, candidate_routes, image_tokens_matrix
from optimizer.run import OptimizerError, OptimizeSettings, optimize
from router.config import load_config
from router.rollout.sequential import SequentialConfig, evaluate_paired_metric
from router.rollout.settings import RolloutSettings
from router.rules import ImageFeatures, RequestFeatures, Ruleset, choose_route

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "examples" / "emulated.yaml"
MODELS = ("gpt-4o", "gpt-4.1-mini", "gemini-2.5-flash")  # the demo's replay models
BASELINE = Route("gpt-4o", "high")
REPLAYED = (Route("gpt-4o", "low"), Route("gpt-4.1-mini", "high"), Route("gemini-2.5-flash", "auto"))  # the demo's
TOLERANCE = 0.01
_ROLLOUT = RolloutSettings()
GUARD = SequentialConfig(delta=_ROLLOUT.delta, beta=_ROLLOUT.beta)  # the rollout defaults
#: Looser guards for comparison: the former default and the demo's former δ.
LOOSER = (SequentialConfig(delta=0.03, beta=0.10), SequentialConfig(delta=0.10, beta=0.10))


@dataclass
class LoopOutcome:
    decision: str
    looser_decisions: tuple[str, ...]
    predicted_cut: float
    cost_cut: float  # realised on fresh traffic, paired, had the proposal been served
    quality_diff: float  # candidate − baseline on the same fresh images
    routes: dict[str, float]

    @property
    def deployed_cut(self) -> float:
        return self.cost_cut if self.decision.startswith("promote") else 0.0


def workload(n: int, seed: int, out: Path, mix: dict[str, float] | None) -> list[Item]:
    tag = "default" if mix is None else "mix-" + "-".join(f"{k}{v:g}" for k, v in sorted(mix.items()))
    target = out / f"s{seed}-n{n}-{tag}"
    records = generate_workload(n, seed, target, mix)
    images = {r["id"]: (target / r["file"]).read_bytes() for r in records}
    return load_items(records, images)


def valid(quality: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray]:
    """Images the baseline answer could be scored on; elsewhere an unscorable answer counts 0."""
    keep = ~np.isnan(quality[base])
    return keep, np.nan_to_num(quality, nan=0.0)


def observations(items: Sequence[Item], routes: Sequence[Route], quality: np.ndarray, cost: np.ndarray,
                 catalog: dict, replayed: set[int] | None = None) -> Observations:
    """What the store would hold after baseline traffic plus replays of ``replayed`` (item
    positions; every item when None), for the optimizer."""
    widths = np.array([i.record["width"] for i in items])
    heights = np.array([i.record["height"] for i in items])
    tokens = image_tokens_matrix(catalog, routes, widths, heights)
    rows = []
    for r, route in enumerate(routes):
        for k, item in enumerate(items):
            if route != BASELINE and replayed is not None and k not in replayed:
                continue
            rec = item.record
            q = quality[r, k]
            rows.append({
                "trace_id": f"{route.key}-{rec['id']}", "span_id": f"{route.key}-{rec['id']}", "ts": "2026-12-04",
                "route": route.key, "model": route.model, "arm": "active", "propensity": 1.0, "task": rec["task"],
                "replay": route != BASELINE, "input_tokens": int(tokens[r, k]) + 40, "image_tokens": int(tokens[r, k]),
                "output_tokens": 60, "billed_cost_usd": float(cost[r, k]), "sha256": rec["sha256"],
                "width": rec["width"], "height": rec["height"],
                "text_height_px": None if np.isnan(item.text_height) else item.text_height,
                "quality": None if np.isnan(q) else float(q),
            })
    return Observations(pl.DataFrame(rows).sort(["sha256", "task", "route"]))


def route_of(ruleset: Ruleset, item: Item) -> Route:
    rec = item.record
    th = None if np.isnan(item.text_height) else item.text_height
    features = RequestFeatures(images=(ImageFeatures(rec["width"], rec["height"], rec["bytes"], rec["format"], th),),
                               task=rec["task"])
    target = choose_route(ruleset, features).target
    return Route(target.model, target.detail)


def image_frame(items: Sequence[Item]) -> pl.DataFrame:
    return pl.DataFrame([{"span_id": i.record["id"], "sha256": i.record["sha256"], "task": i.record["task"],
                          "width": i.record["width"], "height": i.record["height"],
                          "text_height_px": None if np.isnan(i.text_height) else float(i.text_height)} for i in items])


def pick_replays(train: Sequence[Item], budget: int, how: str, c_train: np.ndarray, seed: int,
                 replayed: Sequence[Route] = REPLAYED) -> set[int] | None:
    """Which training images are replayed: all (``budget`` ≥ the pool), a stratified sample, or a
    stratified half then ``targeted_sample`` for the rest, given what the first half observed."""
    if budget >= len(train):
        return None
    frame = image_frame(train).with_row_index("_k")
    first = stratified_sample(frame, budget if how == "uniform" else budget // 2, seed)
    picked = set(first["_k"].to_list())
    if how == "targeted":
        observed = pl.concat([first.with_columns(pl.lit(r.key).alias("route")) for r in replayed])
        savings = {r.key: float(c_train[0].mean() - c_train[1 + j].mean()) for j, r in enumerate(replayed)}
        rest = frame.filter(~pl.col("_k").is_in(list(picked)))
        picked |= set(targeted_sample(rest, observed, savings, budget - len(picked), seed)["_k"].to_list())
    return picked


def run_loop(reader: WorldReader, train: list[Item], fresh: list[Item], routes: list[Route], q_fresh: np.ndarray,
             c_fresh: np.ndarray, catalog: dict, args: argparse.Namespace) -> LoopOutcome:
    seen = [BASELINE, *args.replay_routes]
    q_train, c_train = reader.matrices(train, seen)
    replayed = pick_replays(train, args.replay or len(train), args.pick, c_train, args.seed, args.replay_routes)
    try:
        settings = OptimizeSettings(models=MODELS, tolerance=TOLERANCE, trials=args.trials, seed=args.seed,
                                    unseen_loss=args.unseen_loss, confidence=args.confidence,
                                    losses_only=args.losses_only, by_task=args.by_task,
                                    exact_routes=args.exact_routes, cross_fit=args.cross_fit)
        proposal = optimize("unused", catalog, settings,
                            observations=observations(train, seen, q_train, c_train, catalog, replayed))
    except OptimizerError as exc:
        print(f"  optimizer refused: {exc}")
        return LoopOutcome("not proposed", ("not proposed",) * len(LOOSER), 0.0, 0.0, 0.0, {})
    index = {r.key: i for i, r in enumerate(routes)}
    chosen = np.array([index[route_of(proposal.ruleset, it).key] for it in fresh])
    base = index[BASELINE.key]
    keep, q = valid(q_fresh, base)
    cols = np.flatnonzero(keep)
    cand_q, base_q = q[chosen[cols], cols], q[base, cols]
    decision, *looser = (_decide(cand_q, base_q, g) for g in (GUARD, *LOOSER))
    if (chosen == base).all():
        decision, *looser = ["nothing to guard (the proposal keeps the baseline route)"] * (1 + len(LOOSER))
    cut = 1.0 - c_fresh[chosen[cols], cols].sum() / c_fresh[base, cols].sum()
    shares = {routes[r].key: float(np.mean(chosen == r)) for r in np.unique(chosen)}
    return LoopOutcome(decision, tuple(looser), proposal.savings, float(cut), float(cand_q.mean() - base_q.mean()), shares)


def _decide(canary: np.ndarray, shadow: np.ndarray, config: SequentialConfig) -> str:
    """The guard's paired sequential decision after all pairs; undecided means not promoted."""
    result = evaluate_paired_metric("quality", canary, shadow, config)
    stats = result.statistics
    if result.action == "extend":
        return f"undecided after {len(canary)} pairs (not promoted)"
    return f"{result.action} at pair {stats.get('canary_at_decision')}"


def scorable(items: list[Item], q_fresh: np.ndarray,
             base: int) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The fresh images the baseline answer could be scored on (their columns), the quality
    matrix with unscorable answers at 0 (``valid``), and those images' router features
    (text ‰, long side, task)."""
    keep, q = valid(q_fresh, base)
    cols = np.flatnonzero(keep)
    permille = np.array([i.permille for i in items])[cols]
    side = np.array([float(i.long_side) for i in items])[cols]
    task = np.array([i.record["task"] for i in items])[cols]
    return cols, q, (permille, side, task)


def oracle_on(items: list[Item], q_fresh: np.ndarray, c_fresh: np.ndarray, base: int, by_task: bool) -> OracleResult:
    cols, q, features = scorable(items, q_fresh, base)
    return oracle(c_fresh[:, cols], q[:, cols], *features, base, TOLERANCE, by_task=by_task)


def held_out_oracle(items: list[Item], q_fresh: np.ndarray, c_fresh: np.ndarray, base: int) -> tuple[float, float]:
    """The oracle without hindsight: rules chosen on one half of the fresh images (even, odd)
    and applied to the other, both ways; the paired cost cut and quality change (points) over all."""
    cols, q, features = scorable(items, q_fresh, base)
    chosen = np.full(len(items), base)
    chosen[cols] = cross_applied(c_fresh[:, cols], q[:, cols], *features, base, TOLERANCE)
    return _paired(chosen, cols, q, c_fresh, base)


def reference(items: list[Item], q_fresh: np.ndarray, c_fresh: np.ndarray,
              base: int) -> tuple[float, float, tuple[float | None, float | None]]:
    """``optimizer.oracle.held_out_reference`` on the fresh images: each half routed by rules
    chosen on the other, with a margin that other half chose for itself; cut, Δ quality, margins."""
    cols, q, features = scorable(items, q_fresh, base)
    chosen = np.full(len(items), base)
    chosen[cols], margins = held_out_reference(c_fresh[:, cols], q[:, cols], *features, base, TOLERANCE)
    return (*_paired(chosen, cols, q, c_fresh, base), margins)


def _paired(chosen: np.ndarray, cols: np.ndarray, q: np.ndarray, c_fresh: np.ndarray, base: int) -> tuple[float, float]:
    """Paired cost cut and quality change (points) of ``chosen`` against the baseline, over ``cols``."""
    cut = 1.0 - c_fresh[chosen[cols], cols].sum() / c_fresh[base, cols].sum()
    return float(cut), float((q[chosen[cols], cols] - q[base, cols]).mean() * 100)


def run_world(name: str, args: argparse.Namespace, catalog: dict, out: Path) -> None:
    world = get_world(name)
    t0 = time.perf_counter()
    train_mix = fresh_mix = None
    if name == "adversarial":
        train_mix = {k: v for k, v in DEFAULT_MIX.items() if k != "table"}
        fresh_mix = {**DEFAULT_MIX, "table": 0.33}
    train = workload(args.train, args.seed, out, train_mix)
    fresh = workload(args.fresh, args.seed + 1, out, fresh_mix)
    reader = WorldReader(world, build_model_table(CONFIG), catalog)
    routes = candidate_routes(catalog, list(MODELS))
    q_fresh, c_fresh = reader.matrices(fresh, routes)
    base = [r.key for r in routes].index(BASELINE.key)
    plain = oracle_on(fresh, q_fresh, c_fresh, base, by_task=False)
    tasked = oracle_on(fresh, q_fresh, c_fresh, base, by_task=True)
    loop = run_loop(reader, train, fresh, routes, q_fresh, c_fresh, catalog, args)
    captured = loop.deployed_cut / plain.cost_cut if plain.cost_cut > 0 else float("nan")
    used = sorted(routes[r].key for r in plain.routes_used())
    print(f"{world.key:<24} oracle cut {plain.cost_cut:6.1%} (+task {tasked.cost_cut:6.1%}) "
          f"on {len(used)} route(s) {used}, text cuts {plain.text_cuts}, side cuts {plain.side_cuts}")
    held_cut, held_dq = held_out_oracle(fresh, q_fresh, c_fresh, base)
    print(f"{'':<24} oracle held out (rules chosen on the other half of the fresh images): cut {held_cut:6.1%}, "
          f"quality {held_dq:+.2f} pt")
    print(f"{'':<24} loop: predicted {loop.predicted_cut:6.1%}; fresh paired cut {loop.cost_cut:6.1%}, "
          f"quality {loop.quality_diff * 100:+.2f} pt; guard {loop.decision}; "
          f"deployed cut {loop.deployed_cut:6.1%}; captured {captured:6.1%} of the oracle's")
    looser = "; ".join(f"δ={g.delta:g} {d}" for g, d in zip(LOOSER, loop.looser_decisions, strict=True))
    print(f"{'':<24} looser guards: {looser}")
    ref_cut, ref_dq, margins = reference(fresh, q_fresh, c_fresh, base)
    share = f"the loop's deployed cut is {loop.deployed_cut / ref_cut:6.1%} of it" if ref_cut > 0 else "nothing to capture"
    print(f"{'':<24} reference held out (margin chosen on its own half: {margins}): cut {ref_cut:6.1%}, "
          f"quality {ref_dq:+.2f} pt; {share}")
    print(f"{'':<24} baseline quality {plain.baseline_quality:.3f}; proposal routes {loop.routes}; "
          f"{time.perf_counter() - t0:.0f} s")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=30)
    p.add_argument("--fresh", type=int, default=30)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--trials", type=int, default=200)
    p.add_argument("--worlds", nargs="+", default=list(WORLDS))
    p.add_argument("--unseen-loss", type=float, default=0.25, help="optimize()'s allowance for unseen failures")
    p.add_argument("--confidence", type=float, default=0.9, help="optimize()'s lower-bound confidence")
    p.add_argument("--overall-bound", dest="losses_only", action="store_false",
                   help="optimize()'s overall bound (gains pay for losses) instead of per-bucket losses only")
    p.add_argument("--task", dest="by_task", action="store_true", help="rules may split one task off")
    p.add_argument("--exact-routes", dest="exact_routes", action="store_true",
                   help="optimize() searches only the cuts; each bucket's route is the exact cheapest under the bound")
    p.add_argument("--cross-fit", dest="cross_fit", choices=("off", "routes", "search"), default="off",
                   help="optimize() chooses on one half of the training images and certifies on the other: "
                        "routes per bucket where both halves agree, or the whole search's winner (optimizer.crossfit)")
    p.add_argument("--replay", type=int, default=0, help="training images replayed (default: all)")
    p.add_argument("--pick", choices=("uniform", "targeted"), default="targeted",
                   help="with --replay below --train: a stratified sample, or half of it then targeted_sample")
    p.add_argument("--replay-routes", nargs="+", type=Route.parse, default=list(REPLAYED), metavar="MODEL:DETAIL",
                   help="routes the training images are replayed on (default: the demo's three)")
    p.add_argument("--out", type=Path, default=Path("bench-out/regret"))
    args = p.parse_args(argv)
    if BASELINE in args.replay_routes or len(set(args.replay_routes)) < len(args.replay_routes):
        p.error("--replay-routes: the baseline route is always observed; list each other route once")
    catalog = load_config(CONFIG).models
    print(f"train {args.train} images (seed {args.seed}), fresh {args.fresh} (seed {args.seed + 1}), "
          f"tolerance {TOLERANCE}, guard δ={GUARD.delta} β={GUARD.beta}; optimizer unseen_loss {args.unseen_loss}, "
          f"confidence {args.confidence}, losses_only {args.losses_only}, by_task {args.by_task}, exact_routes {args.exact_routes}, "
          f"cross_fit {args.cross_fit}; "
          f"replayed {args.replay or args.train} of {args.train} ({args.pick if args.replay else 'all'}) "
          f"on {[r.key for r in args.replay_routes]}")
    for name in args.worlds:
        run_world(name, args, catalog, args.out)


if __name__ == "__main__":
    main()
