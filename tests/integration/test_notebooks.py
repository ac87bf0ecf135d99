"""The notebooks run top to bottom on a demo-like store, draw their charts, and cope with an empty one."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import optuna
import pytest
from nbclient import NotebookClient

from collector.store import open_store
from tests.store_fixture import build_demo_like_store

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
pytestmark = pytest.mark.slow


def _run(name: str, workdir: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(
        nb, kernel_name="python3", timeout=180, allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()
    return nb


def _outputs(nb: nbformat.NotebookNode) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


def _images(nb: nbformat.NotebookNode) -> int:
    return sum(1 for out in _outputs(nb) if "image/png" in out.get("data", {}))


def _text(nb: nbformat.NotebookNode) -> str:
    return "\n".join(out.get("text", "") for out in _outputs(nb) if out.get("output_type") == "stream")


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_like_store(tmp_path_factory.mktemp("nb") / "aperture.duckdb", n_requests=150, seed=1)


def _study(path: Path) -> None:
    study = optuna.create_study(study_name="aperture-routing", storage=f"sqlite:///{path}", direction="minimize")
    for i in range(12):
        cost = 0.002 + 0.0005 * i
        study.add_trial(optuna.trial.create_trial(
            params={"i": i}, distributions={"i": optuna.distributions.IntDistribution(0, 20)}, value=cost,
            user_attrs={"cost": cost, "quality": min(0.95, 0.6 + 0.04 * i - 0.03 * (i % 3)), "feasible": i > 3},
        ))


def test_the_kernel_runs_this_interpreter(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys, collector; print(sys.executable)")])
    NotebookClient(nb, kernel_name="python3", timeout=60, resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = nb.cells[0].outputs[0]["text"].strip()
    assert Path(printed).resolve() == Path(sys.executable).resolve()


def test_spend_notebook_draws_every_chart(demo_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APERTURE_DB", str(demo_store))
    nb = _run("spend_analysis", tmp_path)
    assert _images(nb) == 6  # grouped spend, per day, distribution, costliest, tokens, detail not needed
    text = _text(nb)
    assert f"store: {demo_store} (read-only)" in text
    assert "saveable at low detail" in text and "No " not in text


def test_routing_notebook_draws_scores_clusters_front_and_rollouts(
    demo_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _study(tmp_path / "optuna.db")
    monkeypatch.setenv("APERTURE_DB", str(demo_store))
    monkeypatch.setenv("APERTURE_OPTUNA_DB", str(tmp_path / "optuna.db"))
    nb = _run("routing_loop", tmp_path)
    assert _images(nb) == 4
    assert "No " not in _text(nb)


def test_notebooks_say_what_is_missing_instead_of_failing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty.duckdb"
    with open_store(empty):
        pass  # every table, no rows
    monkeypatch.setenv("APERTURE_DB", str(empty))
    monkeypatch.setenv("APERTURE_OPTUNA_DB", str(tmp_path / "no-study.db"))
    spend = _run("spend_analysis", tmp_path)
    routing = _run("routing_loop", tmp_path)
    assert _images(spend) == 0 and _images(routing) == 0
    assert "No image spans in this store yet." in _text(spend)
    assert "No evaluation scores in this store yet." in _text(routing)
    assert "No optimizer study storage at" in _text(routing)
    assert not (tmp_path / "no-study.db").exists()


def test_missing_store_falls_back_to_an_empty_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APERTURE_DB", str(tmp_path / "absent.duckdb"))
    nb = _run("spend_analysis", tmp_path)
    assert "run `make demo` or set APERTURE_DB" in _text(nb)
    assert not (tmp_path / "absent.duckdb").exists()
