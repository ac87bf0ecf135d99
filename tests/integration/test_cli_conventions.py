"""CLI conventions: --version, --format json, enum choices, one-line errors, guard --once exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from aperture.cli import app
from aperture.cli_support import GUARD_EXIT, one_line
from tests.integration.test_rollout_guard import setup_rollout, write_traffic

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "examples" / "emulated.yaml")
runner = CliRunner()


def _one_line_error(result: object, code: int = 2) -> str:
    assert result.exit_code == code, result.output  # type: ignore[attr-defined]
    text = result.output.strip()  # type: ignore[attr-defined]
    assert "Traceback" not in text and text.startswith("error:"), text
    assert len(text.splitlines()) == 1, text
    return text


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("aperture ")


def test_shell_completion_is_offered() -> None:
    result = runner.invoke(app, ["--help"])
    assert "--install-completion" in result.output and "--show-completion" in result.output


def test_estimate_json_and_table() -> None:
    out = json.loads(runner.invoke(app, ["estimate", "1024x1024", "-m", "gpt-4o", "-d", "high", "-c", CONFIG,
                                         "--format", "json"]).output)
    assert out["image_tokens"] == 765
    table = runner.invoke(app, ["estimate", "1024x1024", "-m", "gpt-4o", "-d", "high", "-c", CONFIG]).output
    assert "765" in table and not table.lstrip().startswith("{")


@pytest.mark.parametrize("args", [["estimate", "1x1", "-m", "gpt-4o", "-d", "huge", "-c", CONFIG],
                                  ["spend", "--by", "colour"], ["spend", "--format", "xml"],
                                  ["eval", "--format", "yaml"], ["guardrails", "report", "--format", "csv"]])
def test_choices_are_enums(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "Invalid value" in result.output


@pytest.mark.parametrize("command", [["spend"], ["eval"], ["clusters"], ["guardrails", "report"], ["guard", "--once", "-c", CONFIG,
                                                                         "--rules-store", "."]])
def test_missing_store_is_one_line(tmp_path: Path, command: list[str]) -> None:
    text = _one_line_error(runner.invoke(app, [*command, "--db", str(tmp_path / "none.duckdb")]))
    assert "no store at" in text and str(tmp_path) in text


def test_missing_rule_store_is_one_line(tmp_path: Path) -> None:
    assert "no rule store" in _one_line_error(runner.invoke(app, ["rules", "list", "-c", CONFIG]))
    text = _one_line_error(runner.invoke(app, ["rules", "list", "-c", CONFIG, "--rules-store", str(tmp_path / "x")]))
    assert str(tmp_path / "x") in text


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("providers: {}\nmodels: {x: {provider: nope}}\n")
    _one_line_error(runner.invoke(app, ["estimate", "10x10", "-m", "x", "-c", str(bad)]))
    _one_line_error(runner.invoke(app, ["rules", "list", "-c", str(bad), "--rules-store", str(tmp_path)]))
    text = _one_line_error(runner.invoke(app, ["rules", "list", "-c", str(tmp_path / "gone.yaml")]))
    assert "gone.yaml" in text


def test_missing_extra_names_it() -> None:
    exc = ModuleNotFoundError("No module named 'optuna'", name="optuna")
    assert one_line(exc) == "this command needs 'optuna': pip install 'aperture-gateway[optimizer]'"


def test_rules_list_and_show_json(tmp_path: Path) -> None:
    from aperture.policies import open_rule_store
    from router.config import load_config

    store = open_rule_store(load_config(CONFIG), tmp_path / "rules")
    active = store.pointer().active
    listed = json.loads(runner.invoke(app, ["rules", "list", "-c", CONFIG, "--rules-store", str(tmp_path / "rules"),
                                            "--format", "json"]).output)
    assert listed["active"] == active and [v["id"] for v in listed["versions"]] == [active]
    shown = json.loads(runner.invoke(app, ["rules", "show", active, "-c", CONFIG, "--rules-store",
                                           str(tmp_path / "rules"), "--format", "json"]).output)
    assert shown["active"] is True and shown["text"] == store.text(active)


@pytest.mark.parametrize(("p_canary", "n", "action"), [(0.80, 3000, "rollback"), (0.92, 40, "extend")])
def test_guard_once_exit_code_carries_the_decision(tmp_path: Path, p_canary: float, n: int, action: str) -> None:
    store, db = setup_rollout(tmp_path)
    write_traffic(db, store, n, 0.92, p_canary, seed=1)
    result = runner.invoke(app, ["guard", "--once", "--db", str(db), "-c", CONFIG, "--rules-store",
                                 str(tmp_path / "rules"), "--format", "json"])
    decision = json.loads(result.output)
    assert decision["action"] == action
    assert result.exit_code == GUARD_EXIT[action] == {"rollback": 20, "extend": 10}[action]


def _guard_once_without_canary(tmp_path: Path, config: str) -> Result:
    """``aperture guard --once`` on an empty store and a fresh rule store (no canary)."""
    from aperture.policies import open_rule_store
    from collector.store import open_store
    from router.config import load_config

    open_rule_store(load_config(config), tmp_path / "rules")
    with open_store(tmp_path / "a.duckdb"):
        pass
    return runner.invoke(app, ["guard", "--once", "--db", str(tmp_path / "a.duckdb"), "-c", config,
                               "--rules-store", str(tmp_path / "rules")])


def test_guard_once_without_canary_exits_zero(tmp_path: Path) -> None:
    result = _guard_once_without_canary(tmp_path, CONFIG)
    assert result.exit_code == 0 and result.output.startswith("idle")


def test_progress_bar_follows_the_callback() -> None:
    import io

    from rich.console import Console

    from aperture.cli_support import progress_bar

    screen = io.StringIO()
    with progress_bar("work", 4, console=Console(file=screen, force_terminal=True, width=100)) as update:
        for done in range(1, 5):
            update(done, None)
        update(6, 8)  # a library may learn the total late
    assert "6/8" in screen.getvalue()
    with progress_bar("off", 2, enabled=False) as quiet:
        quiet(1, 2)  # a disabled bar takes the same calls and draws nothing


def test_workload_generate_reports_progress_and_writes(tmp_path: Path) -> None:
    result = runner.invoke(app, ["workload", "generate", "--n", "2", "--seed", "3", "--out", str(tmp_path / "w"),
                                 "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "w" / "ground_truth.jsonl").read_text().splitlines()) == 2


def _with_rollout(tmp_path: Path, name: str, section: str) -> str:
    """``CONFIG`` with a ``rollout:`` section, its rules file still found beside the original."""
    path = tmp_path / f"{name}.yaml"
    text = Path(CONFIG).read_text().replace("rules/baseline.yaml", str(Path(CONFIG).parent / "rules" / "baseline.yaml"))
    path.write_text(text + "\nrollout:\n" + section)
    return str(path)


def test_guard_reads_the_configs_rollout_section(tmp_path: Path) -> None:
    """The same traffic (an equal canary, 800 requests, 160 of them on the canary) under two
    ``rollout:`` sections: a 1-point guard has not enough evidence yet, a 10-point one promotes."""
    configs = {"strict": _with_rollout(tmp_path, "strict", "  paired: false\n  delta: 0.01\n"),
               "loose": _with_rollout(tmp_path, "loose", "  paired: false\n  delta: 0.10\n  beta: 0.10\n")}
    actions = {}
    for name, config in configs.items():
        store, db = setup_rollout(tmp_path / name)
        write_traffic(db, store, 800, 0.92, 0.92, seed=3)
        result = runner.invoke(app, ["guard", "--once", "--db", str(db), "-c", config, "--rules-store",
                                     str(tmp_path / name / "rules"), "--format", "json"])
        actions[name] = json.loads(result.stdout)["action"]
    assert actions == {"strict": "extend", "loose": "promote"}


def test_guard_names_a_paired_config_without_shadows(tmp_path: Path) -> None:
    result = _guard_once_without_canary(tmp_path, _with_rollout(tmp_path, "paired", "  paired: true\n"))
    assert result.exit_code == 0 and result.stdout.startswith("idle")
    assert "rollout.shadow_fraction" in result.stderr and "comparing" in result.stderr
