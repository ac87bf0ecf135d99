"""The `aperture` command's thin subcommands, run as a user would (typer's runner, real files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aperture.cli import app
from tests.integration.gateway_harness import page_png
from tests.store_fixture import build_demo_like_store

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "examples" / "emulated.yaml")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "store.duckdb"
    build_demo_like_store(path, n_requests=80, seed=3)
    return path


def run(*args: str) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_estimate_size_and_file(tmp_path):
    out = json.loads(run("estimate", "1920x1080", "--model", "claude-sonnet-4-5", "--config", CONFIG, "--format", "json"))
    assert out["image_tokens"] == 1560 and out["model_sees"] == "1456x819"
    image = tmp_path / "page.png"
    image.write_bytes(page_png(1024, 1024))
    out = json.loads(run("estimate", str(image), "--model", "gpt-4o", "--detail", "high", "--config", CONFIG, "--format", "json"))
    assert out["image_tokens"] == 765 and out["format"] == "png"
    assert out["cost_usd"] == pytest.approx(765 * 2.5 / 1e6)
    bad = runner.invoke(app, ["estimate", "1x1", "--model", "gpt-9", "--config", CONFIG])
    assert bad.exit_code == 2 and "unknown model" in bad.output


@pytest.mark.parametrize("by", ["model", "team", "day", "detail", "size"])
def test_spend_groupings(store, by):
    assert "spend" in run("spend", "--db", str(store), "--by", by).lower()


def test_spend_csv_and_json(store):
    assert run("spend", "--db", str(store), "--format", "csv").count("\n") > 3
    assert "groups" in json.loads(run("spend", "--db", str(store), "--format", "json"))


def test_rules_lifecycle(tmp_path, store):
    rules = tmp_path / "rules"
    common = ["--config", CONFIG, "--rules-store", str(rules)]
    candidate = tmp_path / "cheap.yaml"
    candidate.write_text("name: cheap\nrules: []\ndefault: {route: {model: gpt-4.1-mini, detail: low}}\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("default: {route: {model: gpt-9}}\n")
    assert runner.invoke(app, ["rules", "validate", str(bad), "--config", CONFIG]).exit_code == 1
    assert "valid" in run("rules", "validate", str(candidate), "--config", CONFIG, "--db", str(store))
    from aperture.policies import open_rule_store
    from router.config import load_config

    open_rule_store(load_config(CONFIG), rules)  # bootstrap v0001 from the config's rules file
    assert "proposed v0002" in run("rules", "propose", str(candidate), *common, "--note", "cheaper")
    assert "v0002" in run("rules", "list", *common)
    assert "gpt-4.1-mini" in run("rules", "diff", "v0001", "v0002", *common)
    assert "gpt-4.1-mini" in run("rules", "show", "v0002", *common)
    assert "canary at 20%" in run("rules", "canary", "v0002", "--fraction", "0.2", *common, "--db", str(store))
    assert "active is now v0002" in run("rules", "promote", *common, "--db", str(store))
    assert "active is now v0001" in run("rules", "rollback", "--to", "v0001", *common, "--db", str(store))


def test_workload_generate_and_references_load(tmp_path):
    out = tmp_path / "wl"
    assert "wrote 4 images" in run("workload", "generate", "--n", "4", "--seed", "1", "--out", str(out))
    db = tmp_path / "refs.duckdb"
    assert "loaded 4 references" in run("references", "load", str(out / "ground_truth.jsonl"), "--db", str(db))


def test_optimize_refuses_without_data_for_other_routes(store, tmp_path):
    result = runner.invoke(app, ["optimize", "--db", str(store), "--config", CONFIG, "--trials", "5",
                                 "--storage", f"sqlite:///{tmp_path}/o.db", "--rules-store", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "no proposal" in result.output
