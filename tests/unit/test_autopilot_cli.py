"""``aperture autopilot``: refuses bad rails by field name; status, pause and resume."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from aperture.cli import app

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _config(tmp_path: Path, extra: str = "") -> Path:
    text = (EXAMPLES / "autopilot.yaml").read_text()
    path = tmp_path / "autopilot.yaml"
    path.write_text(text.replace("rules/baseline.yaml", str(EXAMPLES / "rules" / "baseline.yaml")) + extra)
    return path


def test_an_invalid_rail_is_refused_at_start_naming_the_field(tmp_path: Path) -> None:
    result = runner.invoke(app, ["autopilot", "--config", str(_config(tmp_path, "\n  trials: -3\n"))])
    assert result.exit_code == 2
    assert "autopilot.trials" in result.output and "Traceback" not in result.output


def test_a_missing_config_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["autopilot", "status", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "no config file" in result.output


def test_pause_resume_and_status(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    config = str(_config(tmp_path))
    rules = str(tmp_path / "rules")
    from aperture.policies import open_rule_store
    from router.config import load_config

    open_rule_store(load_config(config), Path(rules))  # what `aperture serve` does at first start
    assert runner.invoke(app, ["autopilot", "pause", "--config", config, "--rules-store", rules,
                               "--reason", "change freeze"]).exit_code == 0
    shown = runner.invoke(app, ["autopilot", "status", "--config", config, "--rules-store", rules, "--json",
                                "--db", str(tmp_path / "none.duckdb")])
    assert shown.exit_code == 0
    payload = json.loads(shown.output)
    assert payload["paused"] == "change freeze" and payload["state"]["phase"] == "watching"
    assert "resumed" in runner.invoke(app, ["autopilot", "resume", "--config", config, "--rules-store", rules]).output
    payload = json.loads(runner.invoke(app, ["autopilot", "status", "--config", config, "--rules-store", rules,
                                             "--json", "--db", str(tmp_path / "none.duckdb")]).output)
    assert payload["paused"] is None


def test_a_paired_guard_without_shadows_is_refused_at_start(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """With no shadows no canary request is ever paired: every canary would end undecided."""
    monkeypatch.chdir(tmp_path)
    path = _config(tmp_path)
    path.write_text(path.read_text().replace("shadow_fraction: 1.0", "shadow_fraction: 0.0"))
    result = runner.invoke(app, ["autopilot", "--once", "--config", str(path)])
    assert result.exit_code == 2
    assert "rollout.shadow_fraction" in result.output and "Traceback" not in result.output


def test_two_arms_at_the_default_delta_are_warned_about_and_run(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Valid, but the two-arm test needs thousands of canary requests at δ 0.01: said at start."""
    monkeypatch.chdir(tmp_path)
    path = _config(tmp_path)
    path.write_text(path.read_text().replace("paired: true", "paired: false"))
    result = runner.invoke(app, ["autopilot", "--once", "--dry-run", "--config", str(path),
                                 "--db", str(tmp_path / "aperture.duckdb"), "--rules-store", str(tmp_path / "rules")])
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "rollout.paired is false" in result.output
