"""``aperture demo``: the whole loop, offline, on embedded defaults.

1. Generate two workloads (a training seed and a fresh seed for the traffic that follows).
2. Start the emulator (real OCR) and the gateway on free loopback ports, with a versioned rule
   store whose first version sends everything to the strongest model at high detail.
3. Send the training workload through the ``openai`` SDK (baseline traffic).
4. Replay a stratified sample to every candidate route; score everything (``evals``).
5. Group failures into clusters; optimise a ruleset with Optuna; propose it as a new version.
6. Canary it on the fresh workload, each canary request shadowed on the active version; the
   guard promotes or rolls back with its sequential test on those pairs.
7. Send the rest of the fresh workload and shadow what the candidate served on the baseline
   route; summarise before/after (paired: same images) from the DuckDB store and write an HTML
   report with plots.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from aperture.policies import open_rule_store, ruleset_validator
from aperture.progress import Stage
from aperture.servers import running_app
from aperture.summary import (
    by_bucket,
    paired_requests,
    paired_totals,
    phase_requests,
    route_mix,
    totals,
)
from aperture.traffic import send_workload
from aperture.wiring import build_gateway_app
from collector.semconv import QUALITY_EVALUATORS
from optimizer.routes import Route
from router.config import AppConfig, load_config

EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "emulated.yaml"
BASELINE = Route("gpt-4o", "high")  # the first version's route for everything: the strongest model at high detail


@dataclass
class DemoOptions:
    out: Path = Path("demo-out")
    n: int = 100  # training traffic
    fresh: int = 260  # most fresh images the canary may take before the guard decides
    after: int = 60  # fresh images sent after the decision
    seed: int = 7
    replay_sample: int = 64
    trials: int = 200
    tolerance: float = 0.01
    canary_fraction: float = 0.5
    guard_delta: float = 0.10
    guard_beta: float = 0.10
    canary_batch: int = 40
    concurrency: int = 4
    mode: str = "vision"
    world: str = "pixels"  # emulated world (emulator.worlds); the default keeps the demo's numbers and time goals
    config: Path = EXAMPLE_CONFIG
    # The candidates worth learning about: cheaper per image than gpt-4o at high detail.
    # gpt-4o-mini is left out (its image price equals gpt-4o's by design, providers.md §1.2),
    # and so is Claude Haiku (≈1,500 tokens at $1/M: about gpt-4o's image price).
    replay_models: tuple[str, ...] = ("gpt-4o", "gpt-4.1-mini", "gemini-2.5-flash")
    # Replayed: one cheaper route per kind of saving (lower detail, a smaller model that sees as
    # many pixels, a fixed 768 px view). More images on fewer routes: a failure mode that hits a
    # few percent of images needs dozens of replays per route to show at all.
    replay_routes: tuple[str, ...] = ("gpt-4o:low", "gpt-4.1-mini:high", "gemini-2.5-flash:auto")
    keep: bool = False


@dataclass
class DemoResult:
    before: dict[str, float]
    after: dict[str, float]
    decision: str
    candidate: str | None
    report: Path
    db: Path
    extra: dict[str, Any] = field(default_factory=dict)


def demo_config(opts: DemoOptions, emulator_url: str) -> AppConfig:
    cfg = load_config(opts.config, environ={**os.environ, "APERTURE_EMULATOR_URL": emulator_url})
    cfg.telemetry.capture_content = True
    cfg.telemetry.blob_dir = str((opts.out / "blobs").resolve())
    cfg.telemetry.db_path = str((opts.out / "aperture.duckdb").resolve())
    cfg.routing.rules_store = str((opts.out / "rules").resolve())
    cfg.routing.poll_interval_s = 0.2
    cfg.routing.sticky = "reference"  # the same workload image always lands in the same arm: reruns are comparable
    return cfg


@dataclass(frozen=True)
class Workloads:
    train: list[dict[str, Any]]
    fresh: list[dict[str, Any]]
    train_dir: Path
    fresh_dir: Path
    fresh_prefix: str  # reference-id prefix of the fresh workload's requests


@dataclass(frozen=True)
class Running:
    """The demo's live system: config, rule store, gateway app and its URL, store paths."""

    cfg: AppConfig
    store: Any  # router.rollout.base.RuleStore
    app: Any
    gateway_url: str
    db: Path
    blob_dir: Path
    baseline_version: str | None

    def flush(self) -> None:
        self.app.state.telemetry.provider.force_flush()


@dataclass(frozen=True)
class Proposed:
    proposal: Any  # optimizer.run.Proposal
    version: str


@dataclass(frozen=True)
class CanaryOutcome:
    decision: str
    sent: int  # fresh requests sent while the canary ran
    shadowed: frozenset[str]  # canary requests already shadowed on the active version


def run_demo(opts: DemoOptions, console: Console | None = None) -> DemoResult:
    """Generate → start servers → baseline traffic → replay and evaluate → optimise → canary →
    traffic after the decision → report; ``extra`` collects what each step measured."""
    from collector.store import load_references, open_store
    from emulator.testing import running_emulator

    console = console or Console()
    started = time.perf_counter()
    out = _fresh_out_dir(opts)
    db = out / "aperture.duckdb"
    extra: dict[str, Any] = {"guard_delta": opts.guard_delta, "guard_beta": opts.guard_beta}

    with Stage(console) as stage:
        wl = generate_workloads(opts, stage)
        with running_emulator(mode=opts.mode, catalog=str(opts.config), ocr_workers=2, world=opts.world) as emulator_url:
            cfg = demo_config(opts, emulator_url)
            store = open_rule_store(cfg)
            with open_store(db) as conn:
                load_references(conn, wl.train + wl.fresh)
            app = build_gateway_app(cfg, db_path=db)
            with running_app(app, name="gateway") as gateway_url:
                run = Running(cfg, store, app, gateway_url, db, out / "blobs", store.pointer().active)
                baseline_traffic(run, wl, opts, stage, extra)
                replay_and_evaluate(run, opts, stage, extra)
                proposed = cluster_and_optimize(run, opts, stage, console, extra)
                canary = run_canary(run, wl, proposed.version, opts, stage)
                extra["canary_requests"] = canary.sent
                traffic_after(run, wl, proposed.version, canary, opts, stage)
            extra["gateway_url"] = gateway_url
    return summarise(run, wl, proposed, canary.decision, opts, console, extra, started)


def _fresh_out_dir(opts: DemoOptions) -> Path:
    """``opts.out`` resolved and created; the previous run's store, rules and report removed
    unless ``keep`` (workloads stay: they are reused when their generator is unchanged)."""
    out = opts.out.resolve()
    if not opts.keep:
        for name in ("aperture.duckdb", "aperture.duckdb.wal", "rules", "blobs", "optuna.db", "report.html", "pareto.png"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)
    opts.out = out
    return out


def generate_workloads(opts: DemoOptions, stage: Stage) -> Workloads:
    """1. A training workload and a fresh one for the traffic that follows."""
    from emulator.workload import generate_workload

    train_dir, fresh_dir = opts.out / f"workload-s{opts.seed}", opts.out / f"workload-s{opts.seed + 1}"
    tick = stage.bar("generate workloads", opts.n + opts.fresh)
    train = _workload(generate_workload, opts.n, opts.seed, train_dir, tick)
    fresh = _workload(generate_workload, opts.fresh, opts.seed + 1, fresh_dir, tick)
    return Workloads(train, fresh, train_dir, fresh_dir, f"wl-s{opts.seed + 1}-")


def baseline_traffic(run: Running, wl: Workloads, opts: DemoOptions, stage: Stage, extra: dict[str, Any]) -> None:
    """3. The training workload through the gateway on the first version (the baseline)."""
    tick = stage.bar("baseline traffic (gpt-4o, high)", len(wl.train))
    base = send_workload(run.gateway_url, wl.train, wl.train_dir, concurrency=opts.concurrency, progress=tick)
    extra["baseline_errors"] = base.errors
    run.flush()


def replay_and_evaluate(run: Running, opts: DemoOptions, stage: Stage, extra: dict[str, Any]) -> None:
    """4. Replay a stratified sample to every candidate route, then score everything."""
    from evals.runner import run_evals
    from optimizer.replay import load_items, replay
    from optimizer.routes import candidate_routes

    routes = [r for r in candidate_routes(run.cfg.models, list(opts.replay_models)) if r.key in opts.replay_routes]
    items = load_items(run.db, run.blob_dir, opts.replay_sample, seed=opts.seed)
    total = sum(1 for i in items for r in routes if r.key != i.route)
    tick = stage.bar(f"replay {len(items)} images × {len(routes)} routes", total)
    rep = replay(run.gateway_url, items, routes, concurrency=opts.concurrency, progress=lambda d, t: tick(1))
    extra["replay"] = {"sent": rep.sent, "failed": rep.failed, "errors": rep.errors}
    run.flush()
    tick = stage.bar("evaluate", 1)
    scored = run_evals(run.db, workers=2, progress=False, blob_dir=run.blob_dir)
    tick(1)
    extra["evaluated"] = scored.cases


def cluster_and_optimize(run: Running, opts: DemoOptions, stage: Stage, console: Console,
                         extra: dict[str, Any]) -> Proposed:
    """5. Failure clusters, then the optimizer; its ruleset is proposed as a new version."""
    from evals.clusters import find_failure_clusters, write_clusters
    from optimizer.run import OptimizerError, OptimizeSettings, optimize

    clusters = find_failure_clusters(run.db)
    write_clusters(run.db, clusters)
    extra["clusters"] = [c.printable() for c in clusters[:5]]
    stage.done("failure clusters", f"({len(clusters)})")
    tick = stage.bar("optimize (Optuna)", opts.trials)
    try:
        settings = OptimizeSettings(
            tolerance=opts.tolerance, trials=opts.trials, seed=opts.seed,
            storage=f"sqlite:///{opts.out / 'optuna.db'}", study_name=f"demo-s{opts.seed}",
            models=list(opts.replay_models), fallback=BASELINE.target(),
        )
        proposal = optimize(run.db, run.cfg.models, settings, plot_path=opts.out / "pareto.png",
                            progress=lambda d, t: tick(1))
    except OptimizerError as exc:
        console.print(f"[red]optimizer refused:[/red] {exc}")
        raise
    version = run.store.propose(proposal.text, author="optimizer", note="demo proposal",
                                provenance=proposal.provenance, validate=ruleset_validator(run.cfg))
    extra["proposal"] = proposal
    return Proposed(proposal, version.id)


def run_canary(run: Running, wl: Workloads, version: str, opts: DemoOptions, stage: Stage) -> CanaryOutcome:
    """6. Canary on the fresh workload, each canary request shadowed on the active version, until
    the guard promotes or rolls back (or the canary's share of the fresh images is used up)."""
    from evals.runner import run_evals
    from optimizer.replay import ACTIVE_VERSION, load_items, replay
    from router.rollout import actions
    from router.rollout.guard import Guard, GuardConfig
    from router.rollout.sequential import SequentialConfig

    app = run.app
    actions.start_canary(run.store, version, opts.canary_fraction, db_path=run.db, actor="demo")
    _wait_for(lambda: app.state.gateway.policy_snapshot().canary is not None)
    # The demo tolerates a 10-point drop in the guard (a safety net against gross
    # regressions, decided within the demo's traffic); the optimizer's own constraint
    # is the 1-point one. Production defaults are stricter (docs/rollout.md).
    # Paired: every canary request is shadowed on the active version (a tagged
    # replay), so the guard tests quality differences on the same images.
    guard = Guard(run.db, run.store, GuardConfig(
        evaluators=tuple(sorted(set(QUALITY_EVALUATORS.values()))), error_delta=opts.guard_delta, paired=True,
        sequential=SequentialConfig(delta=opts.guard_delta, beta=opts.guard_beta),
    ))
    decision, sent, shadowed = "extend", 0, set()
    budget = len(wl.fresh) - opts.after
    tick = stage.bar(f"canary {version} at {opts.canary_fraction:.0%} (+ shadows)", budget)
    while sent < budget and decision not in ("promote", "rollback"):
        batch = wl.fresh[sent : sent + opts.canary_batch]
        send_workload(run.gateway_url, batch, wl.fresh_dir, concurrency=opts.concurrency, progress=tick)
        sent += len(batch)
        run.flush()
        canary = [s for s in phase_requests(run.db, wl.fresh_prefix, version)["span_id"].to_list()
                  if s not in shadowed]
        if canary:
            replay(run.gateway_url, load_items(run.db, run.blob_dir, 0, span_ids=canary), [ACTIVE_VERSION],
                   concurrency=opts.concurrency)
            shadowed.update(canary)
            run.flush()
        run_evals(run.db, workers=2, progress=False, blob_dir=run.blob_dir)
        decision = guard.step().action
    return CanaryOutcome(decision, sent, frozenset(shadowed))


def traffic_after(run: Running, wl: Workloads, version: str, canary: CanaryOutcome, opts: DemoOptions,
                  stage: Stage) -> None:
    """7. The rest of the fresh traffic on whatever the guard left active, then the shadows."""
    from evals.runner import run_evals
    from optimizer.replay import load_items, replay

    app = run.app
    _wait_for(lambda: app.state.gateway.policy_snapshot().canary is None, timeout_s=5)
    rest = wl.fresh[canary.sent : canary.sent + opts.after]
    if rest:
        tick = stage.bar("traffic after the decision", len(rest))
        send_workload(run.gateway_url, rest, wl.fresh_dir, concurrency=opts.concurrency, progress=tick)
    run.flush()
    run_evals(run.db, workers=2, progress=False, blob_dir=run.blob_dir)

    # 8. Shadow: every fresh image the candidate served, sent again on the baseline
    # route (tagged as replay, so it never counts as traffic). Same images, same
    # prompts: the paired comparison the before/after claim rests on.
    # (The canary's own shadows ran on the active version, the baseline: reused.)
    served = [s for s in phase_requests(run.db, wl.fresh_prefix, version)["span_id"].to_list()
              if s not in canary.shadowed]
    shadow_items = load_items(run.db, run.blob_dir, 0, span_ids=served) if served else []
    if shadow_items:
        tick = stage.bar("shadow on the baseline route", sum(1 for i in shadow_items if i.route != BASELINE.key))
        replay(run.gateway_url, shadow_items, [BASELINE], concurrency=opts.concurrency, progress=lambda d, t: tick(1))
        run.flush()
        run_evals(run.db, workers=2, progress=False, blob_dir=run.blob_dir)


def summarise(run: Running, wl: Workloads, proposed: Proposed, decision: str, opts: DemoOptions,
              console: Console, extra: dict[str, Any], started: float) -> DemoResult:
    """Before/after from the store (the fair comparison: the same fresh traffic, split at random
    between the two versions, and paired on the shadowed images); the report and the summary."""
    from aperture.report import print_summary, write_report
    from optimizer.run import predicted_cost_on

    db, version, proposal = run.db, proposed.version, proposed.proposal
    before_df = phase_requests(db, f"wl-s{opts.seed}-", run.baseline_version)
    after_df = phase_requests(db, wl.fresh_prefix, version)
    extra["baseline_on_fresh"] = totals(phase_requests(db, wl.fresh_prefix, run.baseline_version))
    extra["paired"] = paired_totals(paired_requests(db, wl.fresh_prefix, version, BASELINE.key))
    result = DemoResult(totals(before_df), totals(after_df), decision, version, opts.out / "report.html", db, extra)
    extra["buckets_before"] = by_bucket(before_df)
    extra["buckets_after"] = by_bucket(after_df)
    extra["routes_after"] = route_mix(after_df)
    extra["predicted_cost_on_after"] = (
        predicted_cost_on(proposal.ruleset, run.cfg.models, _traffic_frame(after_df, db)) if after_df.height else None
    )
    extra["elapsed_s"] = time.perf_counter() - started
    write_report(result, proposal)
    print_summary(console, result, proposal, BASELINE.key)
    return result


def _traffic_frame(after_df: Any, db: Path) -> Any:
    """The after-phase requests with the columns ``predicted_cost_on`` re-prices."""
    from optimizer.data import load_observations

    requests = load_observations(db).requests
    return requests.filter(requests["span_id"].is_in(after_df["span_id"].to_list()))


def _workload(generate: Any, n: int, seed: int, out_dir: Path, tick: Callable[[int], None]) -> list[dict[str, Any]]:
    from emulator.workload import load_ground_truth
    from emulator.workload.generate import GENERATOR_VERSION

    truth = out_dir / "ground_truth.jsonl"
    if truth.exists():
        records = load_ground_truth(truth)
        if len(records) == n and records[0]["params"].get("generator_version") == GENERATOR_VERSION:
            tick(n)
            return records
    return list(generate(n, seed, out_dir, workers=2, progress=tick))


def _wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
