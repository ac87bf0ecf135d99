"""``aperture autopilot [status|pause|resume]``: run the loop's controller, or look at it."""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

autopilot_app = typer.Typer(help="The loop's controller: score, search, propose, canary, guard, on its own.")
console = Console()

ConfigOption = typer.Option(Path("examples/autopilot.yaml"), "--config", "-c", help="Gateway configuration file.")
DbOption = typer.Option(None, "--db", help="DuckDB store (env APERTURE_DB, default ./aperture.duckdb).")
RulesOption = typer.Option(None, "--rules-store", help="Rule store directory (default: the config's routing.rules_store).")


def _config(path: Path) -> Any:
    from pydantic import ValidationError

    from router.config import load_config

    try:
        return load_config(path)
    except FileNotFoundError:
        _fail(f"no config file at {path}")
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "config"
        _fail(f"invalid config {path}: {field}: {first['msg']}")


def _fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(2)


def _folder(cfg: Any, rules_store: Path | None) -> tuple[Any, Path]:
    from aperture.policies import open_rule_store

    if rules_store is None and not cfg.routing.rules_store:
        _fail("the autopilot needs a rule store: set routing.rules_store or pass --rules-store")
    store = open_rule_store(cfg, rules_store, bootstrap=False)
    return store, Path(store.root) / "autopilot"


@autopilot_app.callback(invoke_without_command=True)
def autopilot(
    ctx: typer.Context,
    config: Path = ConfigOption,
    db: Path | None = DbOption,
    rules_store: Path | None = RulesOption,
    once: bool = typer.Option(False, help="One tick, then exit."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Propose, but never start a canary."),
    metrics_port: int | None = typer.Option(None, help="Serve Prometheus metrics on this port."),
    metrics_host: str = typer.Option("127.0.0.1", help="Address the metrics port binds."),
) -> None:
    """Run the controller until interrupted (one per deployment: others wait for its lease)."""
    if ctx.invoked_subcommand is not None:
        return
    from aperture.autopilot.controller import Autopilot
    from aperture.autopilot.lease import FileLease
    from aperture.autopilot.state import StateFile
    from aperture.autopilot.steps import StoreLoopSteps
    from aperture.policies import ruleset_validator
    from aperture.wiring import build_telemetry, default_db_path
    from router.rollout.settings import pairing_gap, promise_gap, two_arm_gap

    cfg = _config(config)
    if dry_run:
        cfg.autopilot.dry_run = True
    if not cfg.autopilot.enabled:
        _fail(f"autopilot.enabled is false in {config}")
    if gap := pairing_gap(cfg.rollout):
        _fail(gap)
    if not cfg.telemetry.blob_dir:
        _fail("the autopilot replays stored images: set telemetry.blob_dir and telemetry.capture_content")
    store, folder = _folder(cfg, rules_store)
    path = default_db_path(db)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    telemetry = build_telemetry(cfg, db_path=path, serves_requests=False)
    steps = StoreLoopSteps(cfg, path, store, blob_dir=Path(cfg.resolve_path(cfg.telemetry.blob_dir)),
                           workdir=folder, validate=ruleset_validator(cfg), tracer_provider=telemetry.provider)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    pilot = Autopilot(cfg.autopilot, path, steps, StateFile(folder),
                      FileLease(folder, owner, cfg.autopilot.lease_ttl_s), tracer_provider=telemetry.provider)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(metrics_port, addr=metrics_host, registry=pilot.metrics.registry)
    console.print(f"autopilot {owner}: store {path.resolve()}, rule store {store.root}", highlight=False)
    for gap in (promise_gap(cfg.rollout, cfg.autopilot), two_arm_gap(cfg.rollout, cfg.autopilot)):
        if gap:
            console.print(f"[yellow]warning:[/yellow] {gap}", highlight=False)
    stop = threading.Event()
    try:
        pilot.run(stop, once=once)
    except KeyboardInterrupt:
        stop.set()
    finally:
        telemetry.shutdown()


@autopilot_app.command("status")
def status(
    config: Path = ConfigOption,
    db: Path | None = DbOption,
    rules_store: Path | None = RulesOption,
    events: int = typer.Option(10, help="Recent decisions to show."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Phase, cycle, lease holder, and the latest decisions."""
    from aperture.autopilot.lease import FileLease
    from aperture.autopilot.state import StateFile, to_json
    from aperture.wiring import default_db_path
    from collector.queries.autopilot import recent_events

    cfg = _config(config)
    _, folder = _folder(cfg, rules_store)
    state_file = StateFile(folder)
    state = state_file.load()
    holder = FileLease(folder, "status", cfg.autopilot.lease_ttl_s).holder()
    path = default_db_path(db)
    recent = recent_events(path, events) if path.exists() else []
    if as_json:
        payload = {"state": json.loads(to_json(state)), "paused": state_file.paused(),
                   "leader": holder.owner if holder else None,
                   "events": [{"ts": e.ts.isoformat(), "step": e.step, "decision": e.decision, "reason": e.reason,
                               "candidate": e.candidate_version} for e in recent]}
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    paused = state_file.paused()
    console.print(f"phase [bold]{state.phase}[/bold]{' (paused: ' + paused + ')' if paused else ''}; "
                  f"cycle {state.cycle_id or '-'}; candidate {state.candidate or '-'}; cycles done {state.cycles}; "
                  f"last outcome {state.last_outcome or '-'}; leader {holder.owner if holder else 'none'}",
                  highlight=False)
    table = Table(title="latest decisions")
    for col in ("time (UTC)", "step", "decision", "reason"):
        table.add_column(col)
    for e in recent:
        table.add_row(f"{e.ts:%Y-%m-%d %H:%M:%S}", e.step, e.decision, e.reason)
    console.print(table)


@autopilot_app.command("pause")
def pause(
    config: Path = ConfigOption,
    rules_store: Path | None = RulesOption,
    reason: str = typer.Option("paused by an operator", help="Why (shown by status)."),
) -> None:
    """Stop acting (a running canary keeps its split; nothing is promoted or rolled back)."""
    from aperture.autopilot.state import StateFile

    _, folder = _folder(_config(config), rules_store)
    StateFile(folder).pause(reason)
    console.print("autopilot paused")


@autopilot_app.command("resume")
def resume(config: Path = ConfigOption, rules_store: Path | None = RulesOption) -> None:
    """Act again from where it paused."""
    from aperture.autopilot.state import StateFile

    _, folder = _folder(_config(config), rules_store)
    console.print("autopilot resumed" if StateFile(folder).resume() else "autopilot was not paused")
