"""``aperture rules``: list, show, diff, validate, propose, canary, promote and roll back the
versioned routing rulesets of the rule store (the same operations as ``/admin/rules``).

``existing_rule_store`` opens the store named by ``--rules-store`` or the config, and refuses
one that does not exist yet (only ``aperture serve`` creates it); ``aperture guard`` uses it too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer

from aperture.cli_support import (
    GUARD_EXIT,
    ConfigOption,
    DbOption,
    FormatOption,
    OutputFormat,
    console,
    emit,
    err,
    existing_store,
    fail,
)
from aperture.wiring import default_db_path

rules_app = typer.Typer(help="Versioned routing rulesets: list, show, diff, validate, propose, canary, promote, rollback.", no_args_is_help=True)
RulesStoreOption = typer.Option(None, "--rules-store", help="Rule store directory (default: the config's routing.rules_store).")


def existing_rule_store(cfg: Any, rules_store: Path | None) -> Any:
    from aperture.policies import open_rule_store

    root = rules_store or cfg.resolve_path(cfg.routing.rules_store)
    if root is None:
        fail("no rule store: pass --rules-store DIR or set routing.rules_store in the config")
    if not Path(root).is_dir():
        fail(f"no rule store at {Path(root).absolute()}: `aperture serve` creates it (routing.rules_store), "
              "or pass --rules-store")
    return open_rule_store(cfg, root, bootstrap=False)


def _store(config: Path, rules_store: Path | None) -> tuple[Any, Any]:
    from router.config import load_config

    cfg = load_config(config)
    return cfg, existing_rule_store(cfg, rules_store)


@rules_app.command("list")
def rules_list(config: Path = ConfigOption, rules_store: Path | None = RulesStoreOption,
               format: OutputFormat = FormatOption) -> None:
    """Every version, and which is active and canary."""
    from rich.table import Table

    _, store = _store(config, rules_store)
    p = store.pointer()
    if format is OutputFormat.json:
        emit(console, format, {
            "active": p.active, "canary": p.canary, "canary_fraction": p.canary_fraction,
            "versions": [{"id": v.id, "parent": v.parent, "created": str(v.created_at), "author": v.author,
                          "hash": v.content_hash, "note": v.note} for v in store.list()],
        }, lambda: "")
        return
    table = Table(title=f"rulesets (active {p.active}, canary {p.canary or '-'} at {p.canary_fraction:.0%})")
    for col in ("id", "parent", "created", "author", "hash", "note"):
        table.add_column(col)
    for v in store.list():
        mark = " (active)" if v.id == p.active else " (canary)" if v.id == p.canary else ""
        table.add_row(v.id + mark, v.parent or "-", str(v.created_at)[:19], v.author, v.content_hash[:12], v.note)
    console.print(table)


@rules_app.command("show")
def rules_show(version: str, config: Path = ConfigOption, rules_store: Path | None = RulesStoreOption,
               format: OutputFormat = FormatOption) -> None:
    """Print one version's text (json: with its id and the pointer's view of it)."""
    _, store = _store(config, rules_store)
    text = store.text(version)
    if format is OutputFormat.json:
        p = store.pointer()
        emit(console, format, {"id": version, "active": p.active == version, "canary": p.canary == version,
                               "text": text}, lambda: "")
        return
    sys.stdout.write(text)


@rules_app.command("diff")
def rules_diff(a: str, b: str, config: Path = ConfigOption, rules_store: Path | None = RulesStoreOption) -> None:
    """Unified diff between two versions."""
    _, store = _store(config, rules_store)
    sys.stdout.write(store.diff(a, b))


@rules_app.command("validate")
def rules_validate(
    file: Path,
    config: Path = ConfigOption,
    db: Path | None = DbOption,
    last: int = typer.Option(1000, help="Dry run over the last N logged images."),
) -> None:
    """Check a ruleset file against the catalog, and dry-run it over recent traffic."""
    from aperture.dryrun import dry_run
    from router.config import load_config
    from router.rules import RulesetError, load_ruleset_text, validate_ruleset

    cfg = load_config(config)
    try:
        ruleset = load_ruleset_text(file.read_text(encoding="utf-8"))
    except RulesetError as exc:
        for problem in exc.problems:
            err.print(f"[red]problem:[/red] {problem}")
        raise typer.Exit(1) from exc
    problems, warnings = validate_ruleset(ruleset, cfg.models)
    for w in warnings:
        err.print(f"[yellow]warning:[/yellow] {w}")
    for p in problems:
        err.print(f"[red]problem:[/red] {p}")
    if problems:
        raise typer.Exit(1)
    path = default_db_path(db)
    if path.exists():
        console.print(dry_run(path, ruleset, cfg, last=last))
    console.print("[green]valid[/green]")


@rules_app.command("propose")
def rules_propose(
    file: Path,
    config: Path = ConfigOption,
    rules_store: Path | None = RulesStoreOption,
    note: str = typer.Option("", help="Why this version."),
    author: str = typer.Option(os.environ.get("USER", "operator"), help="Who proposes it."),
) -> None:
    """Store a new immutable version (refused if invalid)."""
    from aperture.policies import ruleset_validator

    cfg, store = _store(config, rules_store)
    version = store.propose(file.read_text(encoding="utf-8"), author=author, note=note, validate=ruleset_validator(cfg))
    console.print(f"proposed {version.id} ({version.content_hash[:12]})")


@rules_app.command("canary")
def rules_canary(
    version: str,
    fraction: float = typer.Option(..., "--fraction", help="Share of traffic for the candidate (0–1)."),
    config: Path = ConfigOption,
    rules_store: Path | None = RulesStoreOption,
    db: Path | None = DbOption,
) -> None:
    """Send a fraction of traffic to a version."""
    from aperture.policies import ruleset_validator
    from router.rollout import actions

    cfg, store = _store(config, rules_store)
    p = actions.start_canary(store, version, fraction, db_path=default_db_path(db), actor=os.environ.get("USER", "operator"),
                             validate=ruleset_validator(cfg))
    console.print(f"{p.canary} is canary at {p.canary_fraction:.0%} (active {p.active})")


@rules_app.command("promote")
def rules_promote(config: Path = ConfigOption, rules_store: Path | None = RulesStoreOption, db: Path | None = DbOption) -> None:
    """Make the canary the active version."""
    from router.rollout import actions

    _, store = _store(config, rules_store)
    p = actions.manual_promote(store, db_path=default_db_path(db), actor=os.environ.get("USER", "operator"))
    console.print(f"active is now {p.active}")


@rules_app.command("rollback")
def rules_rollback(
    to: str | None = typer.Option(None, "--to", help="Version to make active (default: drop the canary, or the previous active)."),
    config: Path = ConfigOption,
    rules_store: Path | None = RulesStoreOption,
    db: Path | None = DbOption,
) -> None:
    """Abort the canary, or go back to an earlier version."""
    from router.rollout import actions

    _, store = _store(config, rules_store)
    p = actions.manual_rollback(store, to, db_path=default_db_path(db), actor=os.environ.get("USER", "operator"))
    console.print(f"active is now {p.active}; canary {p.canary or '-'}")


def guard(
    db: Path | None = DbOption,
    config: Path = ConfigOption,
    rules_store: Path | None = typer.Option(None, "--rules-store", help="Rule store (default: the config's)."),
    interval: float = typer.Option(10.0, help="Seconds between decisions."),
    once: bool = typer.Option(False, help="Decide once and exit: 0 promote or hold, 10 extend, 20 rollback."),
    format: OutputFormat = FormatOption,
) -> None:
    """Follow canary vs active and promote, roll back or extend with a sequential test.

    The test is the config's ``rollout:`` section (as the autopilot's); a config without one
    gets the two-arm guard's own defaults (δ = 0.05, β = 0.03), which need no shadows. With
    --once the exit code carries the decision: 0 promote or hold (no canary), 10 extend (not
    enough evidence yet), 20 rollback.
    """
    import threading

    from collector.semconv import QUALITY_EVALUATORS
    from router.config import load_config
    from router.rollout.guard import Guard, GuardConfig, guard_config
    from router.rollout.settings import pairing_gap

    cfg = load_config(config)
    evaluators = tuple(sorted(set(QUALITY_EVALUATORS.values())))
    judged = guard_config(cfg.rollout, evaluators) if "rollout" in cfg.model_fields_set else GuardConfig(evaluators=evaluators)
    if "paired" in cfg.rollout.model_fields_set and (gap := pairing_gap(cfg.rollout)):
        err.print(f"note: {gap}; comparing the canary's and the active version's requests instead", highlight=False)
    g = Guard(existing_store(default_db_path(db)), existing_rule_store(cfg, rules_store), judged)
    if once:
        decision = g.step()
        emit(console, format, {"action": decision.action, "reason": decision.reason, "statistics": decision.statistics},
             lambda: f"{decision.action}: {decision.reason}")
        raise typer.Exit(GUARD_EXIT.get(decision.action, 0))
    stop = threading.Event()
    try:
        g.run(interval, stop)
    except KeyboardInterrupt:
        stop.set()
