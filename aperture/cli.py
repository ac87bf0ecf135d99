"""The ``aperture`` command. Each subcommand is thin: it parses options and calls into a package.

Every command that touches the store takes ``--db PATH`` (env ``APERTURE_DB``, default
``./aperture.duckdb``); a relative path is relative to where the command runs. Commands that
report take ``--format table|json``; errors are one line with a non-zero exit code
(:mod:`aperture.cli_support` has the conventions and the exit codes).
"""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from aperture.cli_autopilot import autopilot_app
from aperture.cli_rules import guard, rules_app
from aperture.cli_store import (
    clusters,
    eval_,
    guardrails_app,
    references_load,
    spend,
    workload_generate,
)
from aperture.cli_support import (
    ConfigOption,
    DbOption,
    FormatOption,
    OneLineErrors,
    OutputFormat,
    console,
    emit,
    existing_store,
    fail,
    one_line,
    progress_bar,
    require_extra,
    rows_table,
)
from aperture.wiring import default_db_path

app = typer.Typer(help="Aperture: a self-tuning gateway for vision LLM traffic.", no_args_is_help=True,
                  cls=OneLineErrors, pretty_exceptions_enable=False)
workload_app = typer.Typer(help="Synthetic vision workloads with ground truth.", no_args_is_help=True)
references_app = typer.Typer(help="Ground-truth references for evaluations.", no_args_is_help=True)
app.add_typer(workload_app, name="workload")
app.add_typer(references_app, name="references")
app.add_typer(rules_app, name="rules")
app.add_typer(autopilot_app, name="autopilot")
app.add_typer(guardrails_app, name="guardrails")



class Detail(StrEnum):
    low = "low"
    high = "high"
    auto = "auto"
    medium = "medium"
    ultra_high = "ultra_high"


class EmulatorMode(StrEnum):
    vision = "vision"
    instant = "instant"


def _fail(message: str, code: int = 2) -> None:
    fail(message, code)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            console.print(f"aperture {version('aperture-gateway')}", highlight=False)
        except PackageNotFoundError:  # a source tree that was never installed
            console.print("aperture (not installed)", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Aperture: a self-tuning gateway for vision LLM traffic.

    Exit codes: 0 success, 1 a check failed (rules validate), 2 an error (one line on stderr);
    guard --once: 0 promote or hold, 10 extend, 20 rollback.
    """


# ----------------------------------------------------------------------------- gateway
@app.command()
def serve(
    config: Path = ConfigOption,
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8080, help="Port to bind."),
    db: Path | None = DbOption,
    rules_store: Path | None = typer.Option(None, "--rules-store", help="Versioned rule store directory (hot reload, canary)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Gateway processes. Above 1, spans go by OTLP to one collector, the store's only writer."),
    collector: str | None = typer.Option(
        None, "--collector",
        help="With --workers > 1: OTLP/HTTP traces URL of a running `aperture collector` (default: start one on --db).",
    ),
) -> None:
    """Serve the OpenAI-compatible gateway.

    One process writes spans to the DuckDB store itself. With ``--workers N`` (N > 1) each worker
    exports OTLP to a collector that ``serve`` starts as a child process on a free loopback port
    (writing ``--db``, forwarding to any endpoint the OTEL_EXPORTER_OTLP_* variables named), or to
    the one given with ``--collector``. Rate limits and budgets are then kept per worker.
    """
    from router.config import load_config

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per upstream call otherwise
    cfg = load_config(config)  # fail here, once, on a bad config rather than in every worker
    db_path = (db or cfg.resolve_path(cfg.telemetry.db_path))
    db_path = db_path.absolute() if db_path is not None else None
    console.print(f"store: {db_path if db_path is not None else '(none: spans go by OTLP)'}", highlight=False, soft_wrap=True)
    if workers > 1:
        from aperture.servers import serve_workers

        if db_path is None and collector is None:
            _fail("--workers needs a store: pass --db, set telemetry.db_path, or name a running --collector")
            return
        code = serve_workers(config, host=host, port=port, workers=workers, db_path=db_path or Path("aperture.duckdb"),
                             rules_store=rules_store, collector=collector)
        if code:
            raise typer.Exit(code)
        return
    if collector is not None:
        _fail("--collector is for --workers > 1; one process writes the store itself (or set OTEL_EXPORTER_OTLP_ENDPOINT)")
        return
    import uvicorn

    from aperture.wiring import build_gateway_app

    gateway_app = build_gateway_app(cfg, db_path=db_path, rules_store=rules_store)
    uvicorn.run(gateway_app, host=host, port=port, log_level="warning", access_log=False, loop="auto", http="auto")


@app.command()
def estimate(
    image: str = typer.Argument(..., help="An image file, or WIDTHxHEIGHT."),
    model: str = typer.Option(..., "--model", "-m", help="Catalog model id."),
    detail: Detail = typer.Option(Detail.auto, "--detail", "-d", help="Detail level sent upstream."),
    config: Path = ConfigOption,
    output_tokens: int = typer.Option(0, "--output-tokens", help="Add this many output tokens to the cost."),
    format: OutputFormat = FormatOption,
) -> None:
    """Print the image tokens and cost of one image on one model, before sending anything."""
    from aperture.estimate import estimate_image

    try:
        result = estimate_image(image, model=model, detail=detail.value, config_path=config, output_tokens=output_tokens)
    except (ValueError, FileNotFoundError) as exc:
        _fail(one_line(exc))
        return
    emit(console, format, result, lambda: rows_table(f"{model}, detail {detail.value}", [
        {"field": k, "value": v} for k, v in result.items()]))



@app.command()
def emulate(
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(9100, help="Port to bind."),
    mode: EmulatorMode = typer.Option(EmulatorMode.vision, help="vision (real OCR model) or instant (no model, for benchmarks)."),
    catalog: Path | None = typer.Option(Path("examples/emulated.yaml"), help="Gateway config whose model image rules the emulator follows."),
    cache_dir: Path | None = typer.Option(None, help="OCR answer cache (default $APERTURE_CACHE_DIR or ~/.cache/aperture)."),
    ocr_workers: int = typer.Option(2, help="OCR processes."),
    latency_ms: int = typer.Option(0, help="Latency added to every answer."),
    world: str = typer.Option("pixels", help="Emulated world: how each model reads (see --list-worlds)."),
    list_worlds: bool = typer.Option(False, "--list-worlds", help="List the emulated worlds and exit."),
) -> None:
    """Serve the offline provider emulator (OpenAI, Anthropic and Gemini wire protocols)."""
    from emulator.server import serve_emulator
    from emulator.worlds import WORLDS

    if list_worlds:
        for w in WORLDS.values():
            console.print(f"{w.name}@{w.version}  {w.summary}", highlight=False, soft_wrap=True)
        return
    if world not in WORLDS:
        _fail(f"unknown world {world!r}; known: {', '.join(sorted(WORLDS))}")
    if mode is EmulatorMode.vision:
        require_extra("rapidocr", "onnxruntime")  # the OCR runs in worker processes: check here, once
    serve_emulator(host=host, port=port, mode=mode.value, catalog=str(catalog) if catalog and catalog.exists() else None,
                   cache_dir=cache_dir, ocr_workers=ocr_workers, latency_ms=latency_ms, world=world)


@app.command()
def demo(
    out: Path = typer.Option(Path("demo-out"), help="Where the store, rules, workloads and report go."),
    n: int = typer.Option(100, "--n", help="Training images sent on the baseline ruleset."),
    fresh: int = typer.Option(260, help="Most fresh images the canary may take before the guard decides."),
    after: int = typer.Option(60, help="Fresh images sent after the guard's decision."),
    seed: int = typer.Option(7, help="Workload seed; the fresh traffic uses seed + 1."),
    trials: int = typer.Option(200, help="Optuna trials."),
    replay_sample: int = typer.Option(64, help="Images replayed to each replayed route."),
    tolerance: float = typer.Option(0.01, help="Quality the proposal may lose (0.01 = 1 point)."),
    mode: EmulatorMode = typer.Option(EmulatorMode.vision, help="vision (real OCR) or instant."),
    world: str = typer.Option("pixels", help="Emulated world (aperture emulate --list-worlds); pixels keeps the demo's time goals."),
) -> None:
    """Run the whole loop offline: traffic → evals → clusters → optimize → canary → promote or roll back."""
    from aperture.demo import DemoOptions, run_demo
    from emulator.worlds import WORLDS

    if world not in WORLDS:
        _fail(f"unknown world {world!r}; known: {', '.join(sorted(WORLDS))}")
    logging.basicConfig(level=logging.WARNING)
    run_demo(DemoOptions(out=out, n=n, fresh=fresh, after=after, seed=seed, trials=trials, replay_sample=replay_sample,
                         tolerance=tolerance, mode=mode.value, world=world), console)


# The store's inputs and reports, in aperture.cli_store; registered here, in help order.
workload_app.command("generate")(workload_generate)
references_app.command("load")(references_load)
app.command("eval")(eval_)
app.command()(clusters)
app.command()(spend)


@app.command()
def collector(
    port: int = typer.Option(4318, help="Port of the OTLP/HTTP receiver."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    db: Path | None = DbOption,
    forward: str | None = typer.Option(None, help="Re-export received spans to this OTLP/HTTP endpoint."),
) -> None:
    """OTLP/HTTP receiver writing spans into the store (so several gateways can share one)."""
    from collector.receiver import serve_receiver

    serve_receiver(default_db_path(db), host=host, port=port, forward=forward)


@app.command("replay")
def replay_(
    gateway: str = typer.Option("http://127.0.0.1:8080", help="Gateway base URL."),
    sample: int = typer.Option(50, "--sample", help="How many stored images to replay."),
    db: Path | None = DbOption,
    config: Path = ConfigOption,
    blob_dir: Path | None = typer.Option(None, help="Blob store root (default: the config's telemetry.blob_dir)."),
    models: str | None = typer.Option(None, help="Comma-separated catalog models to replay to (default: all)."),
    api_key: str = typer.Option("replay", envvar="APERTURE_API_KEY", help="Virtual key for the gateway."),
    format: OutputFormat = FormatOption,
) -> None:
    """Send a stratified sample of stored images to every candidate route (tagged as replay)."""
    from optimizer.replay import ReplayError, load_items, replay
    from optimizer.routes import candidate_routes
    from router.config import load_config

    cfg = load_config(config)
    root = blob_dir or cfg.resolve_path(cfg.telemetry.blob_dir)
    if root is None:
        _fail("no blob store: pass --blob-dir or set telemetry.blob_dir")
        return
    routes = candidate_routes(cfg.models, models.split(",") if models else None)
    try:
        items = load_items(existing_store(default_db_path(db)), root, sample)
    except ReplayError as exc:
        _fail(str(exc))
        return
    with progress_bar("replaying", None, enabled=format is OutputFormat.table) as update:
        summary = replay(gateway, items, routes, api_key=api_key, progress=update)
    if format is OutputFormat.json:
        emit(console, format, {"sampled": summary.sampled, "routes": summary.routes, "sent": summary.sent,
                               "failed": summary.failed, "errors": summary.errors}, lambda: "")
        return
    console.print(f"replayed {summary.sampled} images × {len(summary.routes)} routes: {summary.sent} answered, {summary.failed} failed {summary.errors or ''}")
    console.print("next: `aperture eval` to score them, then `aperture optimize`.")


@app.command()
def optimize(
    db: Path | None = DbOption,
    config: Path = ConfigOption,
    trials: int = typer.Option(300, help="Optuna trials (upper bound; early stopping may end sooner)."),
    tolerance: float = typer.Option(0.01, help="Quality the proposal may lose against the baseline (0.01 = 1 point)."),
    seed: int = typer.Option(0, help="Sampler seed."),
    storage: str = typer.Option("sqlite:///optuna.db", help="Optuna storage URL (SQLite file, or PostgreSQL for several workers)."),
    models: str | None = typer.Option(None, help="Comma-separated catalog models to consider (default: all)."),
    rules_store: Path | None = typer.Option(None, "--rules-store", help="Rule store to propose into (default: the config's)."),
    canary: float | None = typer.Option(None, help="Also start the proposal as a canary at this fraction."),
    plot: Path = typer.Option(Path("pareto.png"), help="Where to write the Pareto-front plot."),
    format: OutputFormat = FormatOption,
) -> None:
    """Search routing rules that cut cost without losing quality; propose the winner as a new version."""
    from aperture.policies import open_rule_store, ruleset_validator
    from optimizer.run import OptimizerError, OptimizeSettings
    from optimizer.run import optimize as run_optimize
    from router.config import load_config
    from router.rollout import actions

    cfg = load_config(config)
    store = open_rule_store(cfg, rules_store)  # before the search: a missing rule store fails fast
    try:
        settings = OptimizeSettings(tolerance=tolerance, trials=trials, seed=seed, storage=storage,
                                    models=models.split(",") if models else None)
        with progress_bar("optimizing", trials, enabled=format is OutputFormat.table) as update:
            proposal = run_optimize(existing_store(default_db_path(db)), cfg.models, settings, plot_path=plot,
                                    progress=update)
    except OptimizerError as exc:
        _fail(f"no proposal: {exc}")
        return
    version = store.propose(proposal.text, author="optimizer", note=f"study {proposal.provenance['study']}",
                            provenance=proposal.provenance, validate=ruleset_validator(cfg))
    if canary:
        actions.start_canary(store, version.id, canary, db_path=default_db_path(db), actor="optimizer")
    if format is OutputFormat.json:
        emit(console, format, _proposal_json(proposal, version.id, canary, plot), lambda: "")
        return
    _print_proposal(proposal, plot)
    console.print(f"proposed {version.id}")
    if canary:
        console.print(f"{version.id} is canary at {canary:.0%}")


def _proposal_json(proposal: Any, version_id: str, canary: float | None, plot: Path) -> dict[str, Any]:
    """``optimize --format json``: the proposal, its predictions and the Pareto front."""
    return {
        "proposed": version_id, "canary": canary, "baseline_cost": proposal.baseline_cost,
        "baseline_quality": proposal.baseline_quality, "predicted_cost": proposal.predicted_cost,
        "predicted_quality": proposal.predicted_quality, "quality_interval": list(proposal.quality_interval),
        "savings": proposal.savings, "plot": str(plot),
        "pareto": [{"trial": p.number, "cost": p.cost, "quality": p.quality, "feasible": p.feasible}
                   for p in proposal.search.pareto()],
    }


def _print_proposal(proposal: Any, plot: Path) -> None:
    """``optimize``'s table output: the Pareto front and the proposal against the baseline."""
    from rich.table import Table

    front = Table(title="Pareto front (cost per request, predicted quality)")
    for col in ("trial", "USD / request", "quality", "feasible"):
        front.add_column(col)
    for p in proposal.search.pareto():
        front.add_row(str(p.number), f"{p.cost:.6f}", f"{p.quality:.4f}", "yes" if p.feasible else "no")
    console.print(front)
    t = proposal.tradeoff
    console.print(
        f"baseline {proposal.baseline_cost:.6f} USD/request at quality {proposal.baseline_quality:.4f}; proposal "
        f"{proposal.predicted_cost:.6f} at {proposal.predicted_quality:.4f} [{proposal.quality_interval[0]:.4f}, "
        f"{proposal.quality_interval[1]:.4f}]: {proposal.savings:.1%} cheaper. APGR {t.apgr:.3f}; strong-route share for "
        f"95% of the quality gap: {('%.0f%%' % (100 * t.share_for_95)) if t.share_for_95 is not None else 'n/a'}. Plot: {plot}"
    )


app.command()(guard)  # in aperture.cli_rules, beside the rule store it acts on


# ----------------------------------------------------------------------------- entry
def main() -> None:  # pragma: no cover - console script shim
    app(prog_name="aperture")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
