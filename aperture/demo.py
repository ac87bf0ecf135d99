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
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from aperture.policies import open_rule_store, ruleset_validator
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


class Stage:
    """A titled progress bar that the stages share."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._last: TaskID | None = None
        self.progress = Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)

    def __enter__(self) -> Stage:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.progress.__exit__(*exc)  # type: ignore[arg-type]

    def bar(self, title: str, total: int) -> Callable[[int], None]:
        self.stop()
        task = self.progress.add_task(title, total=total)
        self._last = task

        def advance(n: int = 1) -> None:
            self.progress.advance(task, n)

        return advance

    def stop(self) -> None:
        """Freeze the latest bar's clock (a stage that ended before its total, e.g. early stopping)."""
        if self._last is not None:
            self.progress.stop_task(self._last)
            self._last = None

    def done(self, title: str, detail: str = "") -> None:
        self.stop()
        task = self.progress.add_task(title, total=1)
        self.progress.update(task, completed=1, description=f"{title} {detail}".strip()[:60])


def demo_config(opts: DemoOptions, emulator_url: str) -> AppConfig:
    cfg = load_config(opts.config, environ={**os.environ, "APERTURE_EMULATOR_URL": emulator_url})
    cfg.telemetry.capture_content = True
    cfg.telemetry.blob_dir = str((opts.out / "blobs").resolve())
    cfg.telemetry.db_path = str((opts.out / "aperture.duckdb").resolve())
    cfg.routing.rules_store = str((opts.out / "rules").resolve())
    cfg.routing.poll_interval_s = 0.2
    cfg.routing.sticky = "reference"  # the same workload image always lands in the same arm: reruns are comparable
    return cfg


def run_demo(opts: DemoOptions, console: Console | None = None) -> DemoResult:
    from collector.store import load_references, open_store
    from emulator.testing import running_emulator
    from emulator.workload import generate_workload
    from evals.clusters import find_failure_clusters, write_clusters
    from evals.runner import run_evals
    from optimizer.replay import ACTIVE_VERSION, load_items, replay
    from optimizer.routes import candidate_routes
    from optimizer.run import OptimizerError, optimize, predicted_cost_on
    from router.rollout import actions
    from router.rollout.guard import Guard, GuardConfig
    from router.rollout.sequential import SequentialConfig

    console = console or Console()
    started = time.perf_counter()
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
    db = out / "aperture.duckdb"
    train_dir, fresh_dir = out / f"workload-s{opts.seed}", out / f"workload-s{opts.seed + 1}"
    extra: dict[str, Any] = {"guard_delta": opts.guard_delta, "guard_beta": opts.guard_beta}

    with Stage(console) as stage:
        tick = stage.bar("generate workloads", opts.n + opts.fresh)
        train = _workload(generate_workload, opts.n, opts.seed, train_dir, tick)
        fresh = _workload(generate_workload, opts.fresh, opts.seed + 1, fresh_dir, tick)

        with running_emulator(mode=opts.mode, catalog=str(opts.config), ocr_workers=2, world=opts.world) as emulator_url:
            cfg = demo_config(opts, emulator_url)
            blob_dir = out / "blobs"
            store = open_rule_store(cfg)
            baseline_version = store.pointer().active
            with open_store(db) as conn:
                load_references(conn, train + fresh)
            app = build_gateway_app(cfg, db_path=db)
            telemetry = app.state.telemetry
            with running_app(app, name="gateway") as gateway_url:
                # 3. Baseline traffic.
                tick = stage.bar("baseline traffic (gpt-4o, high)", len(train))
                base = send_workload(gateway_url, train, train_dir, concurrency=opts.concurrency, progress=tick)
                extra["baseline_errors"] = base.errors
                telemetry.provider.force_flush()

                # 4. Replay a stratified sample to every candidate route, then score everything.
                routes = [r for r in candidate_routes(cfg.models, list(opts.replay_models)) if r.key in opts.replay_routes]
                items = load_items(db, blob_dir, opts.replay_sample, seed=opts.seed)
                total = sum(1 for i in items for r in routes if r.key != i.route)
                tick = stage.bar(f"replay {len(items)} images × {len(routes)} routes", total)
                rep = replay(gateway_url, items, routes, concurrency=opts.concurrency, progress=lambda d, t: tick(1))
                extra["replay"] = {"sent": rep.sent, "failed": rep.failed, "errors": rep.errors}
                telemetry.provider.force_flush()
                tick = stage.bar("evaluate", 1)
                scored = run_evals(db, workers=2, progress=False, blob_dir=blob_dir)
                tick(1)
                extra["evaluated"] = scored.cases

                # 5. Failure clusters, then the optimizer.
                clusters = find_failure_clusters(db)
                write_clusters(db, clusters)
                extra["clusters"] = [c.printable() for c in clusters[:5]]
                stage.done("failure clusters", f"({len(clusters)})")
                tick = stage.bar("optimize (Optuna)", opts.trials)
                try:
                    proposal = optimize(
                        db, cfg.models, tolerance=opts.tolerance, trials=opts.trials, seed=opts.seed,
                        storage=f"sqlite:///{out / 'optuna.db'}", study_name=f"demo-s{opts.seed}",
                        models=list(opts.replay_models), fallback=BASELINE.target(),
                        plot_path=out / "pareto.png", progress=lambda d, t: tick(1),
                    )
                except OptimizerError as exc:
                    console.print(f"[red]optimizer refused:[/red] {exc}")
                    raise
                version = store.propose(proposal.text, author="optimizer", note="demo proposal",
                                        provenance=proposal.provenance, validate=ruleset_validator(cfg))
                extra["proposal"] = proposal

                # 6. Canary on the fresh workload, guarded.
                actions.start_canary(store, version.id, opts.canary_fraction, db_path=db, actor="demo")
                _wait_for(lambda: app.state.gateway._snapshot().canary is not None)
                # The demo tolerates a 10-point drop in the guard (a safety net against gross
                # regressions, decided within the demo's traffic); the optimizer's own constraint
                # is the 1-point one. Production defaults are stricter (docs/rollout.md).
                # Paired: every canary request is shadowed on the active version (a tagged
                # replay), so the guard tests quality differences on the same images.
                guard = Guard(db, store, GuardConfig(
                    evaluators=tuple(sorted(set(_quality_evaluators()))), error_delta=opts.guard_delta, paired=True,
                    sequential=SequentialConfig(delta=opts.guard_delta, beta=opts.guard_beta),
                ))
                decision = "extend"
                sent = 0
                shadowed: set[str] = set()
                tick = stage.bar(f"canary {version.id} at {opts.canary_fraction:.0%} (+ shadows)", len(fresh) - opts.after)
                while sent < len(fresh) - opts.after and decision not in ("promote", "rollback"):
                    batch = fresh[sent : sent + opts.canary_batch]
                    send_workload(gateway_url, batch, fresh_dir, concurrency=opts.concurrency, progress=tick)
                    sent += len(batch)
                    telemetry.provider.force_flush()
                    canary = [s for s in phase_requests(db, f"wl-s{opts.seed + 1}-", version.id)["span_id"].to_list()
                              if s not in shadowed]
                    if canary:
                        replay(gateway_url, load_items(db, blob_dir, 0, span_ids=canary), [ACTIVE_VERSION],
                               concurrency=opts.concurrency)
                        shadowed.update(canary)
                        telemetry.provider.force_flush()
                    run_evals(db, workers=2, progress=False, blob_dir=blob_dir)
                    decision = guard.step().action
                extra["canary_requests"] = sent
                # 7. The rest of the fresh traffic on whatever the guard left active.
                _wait_for(lambda: app.state.gateway._snapshot().canary is None, timeout_s=5)
                rest = fresh[sent : sent + opts.after]
                if rest:
                    tick = stage.bar("traffic after the decision", len(rest))
                    send_workload(gateway_url, rest, fresh_dir, concurrency=opts.concurrency, progress=tick)
                telemetry.provider.force_flush()
                run_evals(db, workers=2, progress=False, blob_dir=blob_dir)

                # 8. Shadow: every fresh image the candidate served, sent again on the baseline
                # route (tagged as replay, so it never counts as traffic). Same images, same
                # prompts: the paired comparison the before/after claim rests on.
                # (The canary's own shadows ran on the active version, the baseline: reused.)
                served = [s for s in phase_requests(db, f"wl-s{opts.seed + 1}-", version.id)["span_id"].to_list()
                          if s not in shadowed]
                shadow_items = load_items(db, blob_dir, 0, span_ids=served) if served else []
                if shadow_items:
                    tick = stage.bar("shadow on the baseline route", sum(1 for i in shadow_items if i.route != BASELINE.key))
                    replay(gateway_url, shadow_items, [BASELINE], concurrency=opts.concurrency, progress=lambda d, t: tick(1))
                    telemetry.provider.force_flush()
                    run_evals(db, workers=2, progress=False, blob_dir=blob_dir)
            extra["gateway_url"] = gateway_url

    before_df = phase_requests(db, f"wl-s{opts.seed}-", baseline_version)
    after_df = phase_requests(db, f"wl-s{opts.seed + 1}-", version.id)
    # The fair comparison: the same fresh traffic, split at random between the two versions.
    extra["baseline_on_fresh"] = totals(phase_requests(db, f"wl-s{opts.seed + 1}-", baseline_version))
    extra["paired"] = paired_totals(paired_requests(db, f"wl-s{opts.seed + 1}-", version.id, BASELINE.key))
    result = DemoResult(totals(before_df), totals(after_df), decision, version.id, out / "report.html", db, extra)
    extra["buckets_before"] = by_bucket(before_df)
    extra["buckets_after"] = by_bucket(after_df)
    extra["routes_after"] = route_mix(after_df)
    extra["predicted_cost_on_after"] = (
        predicted_cost_on(proposal.ruleset, cfg.models, _traffic_frame(after_df, db)) if after_df.height else None
    )
    extra["elapsed_s"] = time.perf_counter() - started
    from aperture.report import write_report

    write_report(result, proposal)
    print_summary(console, result, proposal)
    return result


def _quality_evaluators() -> list[str]:
    from optimizer.data import QUALITY_EVALUATORS

    return list(QUALITY_EVALUATORS.values())


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


def print_summary(console: Console, result: DemoResult, proposal: Any) -> None:
    b, a = result.before, result.after
    table = Table(title="Aperture demo: before and after the loop", show_lines=False)
    for col in ("", "requests", "images", "spend (USD)", "USD / image", "quality"):
        table.add_column(col, justify="right" if col else "left")
    table.add_row("before: baseline on training traffic", str(b["requests"]), str(b["images"]), f"{b['spend_usd']:.4f}", f"{b['cost_per_image_usd']:.6f}", f"{b['quality']:.3f}")
    f = result.extra.get("baseline_on_fresh") or {}
    if f.get("requests"):
        table.add_row("baseline on the fresh traffic (active arm)", str(f["requests"]), str(f["images"]), f"{f['spend_usd']:.4f}",
                      f"{f['cost_per_image_usd']:.6f}", f"{f['quality']:.3f}")
    table.add_row(f"after: {result.candidate} on the fresh traffic ({result.decision})", str(a["requests"]), str(a["images"]), f"{a['spend_usd']:.4f}", f"{a['cost_per_image_usd']:.6f}", f"{a['quality']:.3f}")
    console.print(table)
    buckets = Table(title="per size bucket (USD / image, quality)")
    for col in ("size", "before USD/img", "before q", "after USD/img", "after q"):
        buckets.add_column(col)
    after_rows = {r["size_bucket"]: r for r in result.extra["buckets_after"].iter_rows(named=True)}
    for row in result.extra["buckets_before"].iter_rows(named=True):
        other = after_rows.get(row["size_bucket"], {})
        buckets.add_row(row["size_bucket"], f"{row['cost_per_image_usd']:.6f}", _fmt(row["quality"]),
                        _fmt(other.get("cost_per_image_usd"), 6), _fmt(other.get("quality")))
    console.print(buckets)
    pair = result.extra.get("paired") or {}
    if pair.get("pairs"):
        console.print(
            f"on the same {pair['pairs']} fresh images, served by {result.candidate} and shadowed on {BASELINE.key}: "
            f"cost {pair['baseline_cost_usd']:.4f} → {pair['cost_usd']:.4f} USD, cut by [bold]{pair['cost_cut']:.1%}[/bold]; "
            f"quality {pair['baseline_quality']:.3f} → {pair['quality']:.3f} "
            f"([bold]{pair['quality_delta'] * 100:+.1f} points[/bold], 95 % interval {pair['delta_low'] * 100:+.1f} to "
            f"{pair['delta_high'] * 100:+.1f})."
        )
    console.print(
        f"Guard decision: [bold]{result.decision}[/bold] after {result.extra.get('canary_requests')} fresh requests "
        f"(guard: δ = {result.extra.get('guard_delta')}, β = {result.extra.get('guard_beta')}, α = 0.005)."
    )
    predicted = result.extra.get("predicted_cost_on_after")
    if predicted:
        console.print(f"predicted cost of the after-traffic {predicted:.4f} USD vs billed {a['spend_usd']:.4f} USD "
                      f"({(predicted / a['spend_usd'] - 1) * 100 if a['spend_usd'] else 0:+.2f} %).")
    lo, hi = (x - proposal.baseline_quality for x in proposal.quality_interval)
    console.print(f"proposal (on the training traffic): savings {proposal.savings:.1%}, quality "
                  f"{(proposal.predicted_quality - proposal.baseline_quality) * 100:+.1f} points "
                  f"[{lo * 100:+.1f}, {hi * 100:+.1f}] against the baseline"
                  + (f"; realised {pair['quality_delta'] * 100:+.1f} points, "
                     f"{'inside' if lo <= pair['quality_delta'] <= hi else 'outside'} that interval"
                     if pair.get("pairs") else ""))
    console.print(f"store: {result.db}\nreport: {result.report}\nelapsed: {result.extra['elapsed_s']:.0f} s")


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
