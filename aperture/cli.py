"""The ``aperture`` command. Each subcommand is thin: it parses options and calls into a package.

Every command that touches the store takes ``--db PATH`` (env ``APERTURE_DB``, default
``./aperture.duckdb``).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from aperture.wiring import default_db_path

app = typer.Typer(help="Aperture: a self-tuning gateway for vision LLM traffic.", no_args_is_help=True, add_completion=False)
workload_app = typer.Typer(help="Synthetic vision workloads with ground truth.", no_args_is_help=True)
references_app = typer.Typer(help="Ground-truth references for evaluations.", no_args_is_help=True)
rules_app = typer.Typer(help="Versioned routing rulesets: list, show, diff, validate, propose, canary, promote, rollback.", no_args_is_help=True)
app.add_typer(workload_app, name="workload")
app.add_typer(references_app, name="references")
app.add_typer(rules_app, name="rules")

console = Console()
err = Console(stderr=True)

DbOption = typer.Option(None, "--db", help="DuckDB store (env APERTURE_DB, default ./aperture.duckdb).")
ConfigOption = typer.Option(Path("examples/emulated.yaml"), "--config", "-c", help="Gateway configuration file.")


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


# ----------------------------------------------------------------------------- gateway
@app.command()
def serve(
    config: Path = ConfigOption,
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(8080, help="Port to bind."),
    db: Optional[Path] = DbOption,
    rules_store: Optional[Path] = typer.Option(None, "--rules-store", help="Versioned rule store directory (hot reload, canary)."),
) -> None:
    """Serve the OpenAI-compatible gateway."""
    import uvicorn

    from aperture.wiring import build_gateway_app
    from router.config import load_config

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_config(config)
    gateway_app = build_gateway_app(cfg, db_path=default_db_path(db) if db or cfg.telemetry.db_path else None, rules_store=rules_store)
    uvicorn.run(gateway_app, host=host, port=port, log_level="warning", access_log=False)


@app.command()
def estimate(
    image: str = typer.Argument(..., help="An image file, or WIDTHxHEIGHT."),
    model: str = typer.Option(..., "--model", "-m", help="Catalog model id."),
    detail: str = typer.Option("auto", "--detail", "-d", help="low | high | auto | medium | ultra_high"),
    config: Path = ConfigOption,
    output_tokens: int = typer.Option(0, "--output-tokens", help="Add this many output tokens to the cost."),
) -> None:
    """Print the image tokens and cost of one image on one model, before sending anything."""
    from aperture.estimate import estimate_image

    try:
        result = estimate_image(image, model=model, detail=detail, config_path=config, output_tokens=output_tokens)
    except (ValueError, FileNotFoundError) as exc:
        _fail(str(exc))
        return
    console.print_json(json.dumps(result))


# ----------------------------------------------------------------------------- entry
def main() -> None:  # pragma: no cover - console script shim
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
