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
from rich.table import Table

from aperture.autopilot.session import LoopSession
from aperture.progress import Stage
from aperture.summary import (
    by_bucket,
    paired_requests,
    paired_totals,
    phase_requests,
    route_mix,
    totals,
)
from optimizer.routes import Route
from router.config import AppConfig, load_config

EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "autopilot.yaml"
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
    # The guard's δ: the default (0.01, the tolerance) needs a median of 730 shadowed canary
    # requests to promote an equal canary (p90 2,142), 0.03 needs 127 (p90 262); both stay
    # undecided within the demo's fresh traffic; 0.05 needs 68-105 (docs/benchmarks.md). The
    # demo's promotion is therefore weaker than a deployment's: it rules out 5-point losses, not
    # 1-point ones. Errors never happen here, so their δ stays at 0.10.
    guard_delta: float = 0.05
    guard_beta: float = 0.10
    guard_error_delta: float = 0.10
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
    search_timeout_s: float = 900.0  # the longest the demo waits for the autopilot's first canary


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
    """``examples/autopilot.yaml`` with the demo's rails: search once the training traffic is
    scored, replay the demo's routes, shadow every canary request, a guard that decides within
    the demo's traffic (δ = 10 points; production defaults are stricter, docs/rollout.md)."""
    cfg = load_config(opts.config, environ={**os.environ, "APERTURE_EMULATOR_URL": emulator_url})
    cfg.routing.poll_interval_s = 0.2
    cfg.routing.sticky = "reference"  # the same workload image always lands in the same arm: reruns are comparable
    cfg.rollout = cfg.rollout.model_copy(update={"paired": True, "shadow_fraction": 1.0, "delta": opts.guard_delta,
                                                 "beta": opts.guard_beta, "error_delta": opts.guard_error_delta})
    cfg.autopilot = cfg.autopilot.model_copy(update={
        "enabled": True, "interval_s": 1.0, "lease_ttl_s": 30.0, "min_evidence": opts.n, "min_new_requests": opts.n,
        "replay_sample": opts.replay_sample, "replay_routes": list(opts.replay_routes),
        "allowed_models": list(opts.replay_models), "trials": opts.trials, "tolerance": opts.tolerance,
        "min_savings": 0.05, "seed": opts.seed, "canary_fraction": opts.canary_fraction,
        "max_canary_fraction": opts.canary_fraction, "max_canary_requests": opts.fresh, "cooldown_s": 3600.0,
        "max_replay_usd_per_day": 5.0,
    })
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
        self.app.state.telemetry.flush()


@dataclass(frozen=True)
class Proposed:
    proposal: Any  # optimizer.run.Proposal
    version: str


def run_demo(opts: DemoOptions, console: Console | None = None) -> DemoResult:
    """Generate → start the emulator, a gateway and the autopilot → send the training traffic →
    the autopilot scores, replays, optimizes, proposes and starts a canary on its own → send the
    fresh traffic while its guard decides → the rest after the decision → report from the store."""
    from collector.store import load_references, open_store
    from emulator.testing import running_emulator

    console = console or Console()
    started = time.perf_counter()
    out = _fresh_out_dir(opts)
    extra: dict[str, Any] = {"guard_delta": opts.guard_delta, "guard_beta": opts.guard_beta}
    with Stage(console) as stage:
        wl = generate_workloads(opts, stage)
        with (running_emulator(mode=opts.mode, catalog=str(opts.config), ocr_workers=2, world=opts.world) as emulator_url,
              LoopSession(demo_config(opts, emulator_url), out, owner="demo") as session):
            with open_store(session.db) as conn:
                load_references(conn, wl.train + wl.fresh)
            feed = EventFeed(session, console)
            run = Running(session.config, session.autopilot_steps().store, session.app, session.gateway_url,
                          session.db, out / "blobs", session.autopilot_steps().pointer().active)
            sent = autopilot_cycle(session, wl, opts, stage, feed, extra)
            extra["gateway_url"] = session.gateway_url
            extra["traffic"] = {"sent": session.traffic.sent, "ok": session.traffic.ok, "errors": session.traffic.errors}
    proposal = session.autopilot_steps().last_proposal
    print_timeline(console, session.events(), started)
    candidate = next((e.candidate_version for e in session.events() if e.decision == "proposed"), None)
    if proposal is None or candidate is None:
        console.print("[yellow]The autopilot proposed nothing on this traffic (its record is above).[/yellow]")
        return DemoResult({}, {}, "none", None, out / "report.html", session.db, extra)
    decided = session.decided()
    extra["canary_requests"] = sent
    decision = decided.decision if decided is not None else "extend (undecided when the traffic ended)"
    return summarise(run, wl, Proposed(proposal, candidate), decision, opts, console, extra, started)


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


class EventFeed:
    """Prints each autopilot decision once, as the store records it."""

    def __init__(self, session: LoopSession, console: Console) -> None:
        self.session, self.console, self.seen = session, console, 0

    def poll(self) -> None:
        events = self.session.events()
        for e in events[self.seen:]:
            if e.decision not in ("wait",):
                self.console.print(f"  [dim]autopilot[/dim] {e.step}: [bold]{e.decision}[/bold] — {e.reason}",
                                   highlight=False)
        self.seen = len(events)


def autopilot_cycle(session: LoopSession, wl: Workloads, opts: DemoOptions, stage: Stage, feed: EventFeed,
                    extra: dict[str, Any]) -> int:
    """3-7. Traffic as an application sends it; every loop step is the autopilot's. Returns the
    fresh requests sent while the canary ran."""
    tick = stage.bar("training traffic (baseline ruleset)", len(wl.train))
    session.send(wl.train, wl.train_dir, batch=opts.canary_batch, concurrency=opts.concurrency, progress=tick)
    stage.done("autopilot: score, replay, optimize, propose")

    def canary_or_nothing() -> bool:
        feed.poll()
        return any((e.step, e.decision) in (("canary", "start"), ("search", "nothing"), ("canary", "dry_run"))
                   for e in session.events())

    session.wait_for(canary_or_nothing, timeout_s=opts.search_timeout_s)
    if not any(e.step == "canary" and e.decision == "start" for e in session.events()):
        return 0
    budget = len(wl.fresh) - opts.after
    tick = stage.bar(f"traffic while the canary runs (at {opts.canary_fraction:.0%})", budget)

    def decided() -> bool:
        feed.poll()
        return session.decided() is not None

    sent = session.send(wl.fresh[:budget], wl.fresh_dir, batch=opts.canary_batch, concurrency=opts.concurrency,
                        until=decided, progress=tick)
    session.wait_for(decided, timeout_s=120)
    rest = wl.fresh[sent : sent + opts.after]
    if rest:
        tick = stage.bar("traffic after the decision", len(rest))
        session.send(rest, wl.fresh_dir, batch=opts.canary_batch, concurrency=opts.concurrency, progress=tick)
    stage.done("autopilot: score the last traffic")
    session.wait_for(lambda: session.unscored() == 0, timeout_s=300)
    feed.poll()
    return sent


def print_timeline(console: Console, events: list[Any], started: float) -> None:
    """What the autopilot did, from its rows in the store."""
    table = Table(title="What the autopilot did (autopilot_events)")
    for col in ("time (UTC)", "step", "decision", "reason"):
        table.add_column(col)
    for e in events:
        if e.decision != "wait":
            table.add_row(f"{e.ts:%H:%M:%S}", e.step, e.decision, e.reason)
    console.print(table)


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
