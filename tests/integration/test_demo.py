"""`aperture demo` end to end (instant-mode emulator to stay lean), then both notebooks run top
to bottom on the store it wrote, as a new user would after `make demo`."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import nbformat
import pytest
from nbclient import NotebookClient
from rich.console import Console

from aperture.demo import DemoOptions, run_demo
from aperture.summary import paired_requests

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo-out")
    console = Console(record=True, width=140)
    result = run_demo(DemoOptions(out=out, n=36, fresh=48, after=12, replay_sample=20, trials=25, mode="instant", canary_batch=12), console)
    return result, console.export_text(), out


def test_summary_numbers_come_from_the_store(demo):
    result, text, out = demo
    assert "before and after the loop" in text and result.report.exists()
    with duckdb.connect(str(result.db), read_only=True) as conn:
        images, spend = conn.execute(
            "SELECT count(*), sum(i.cost_usd) FROM image_spans i JOIN request_spans r "
            "ON r.span_id = i.request_span_id AND r.trace_id = i.trace_id "
            "WHERE NOT coalesce(r.replay, false) AND r.reference_id LIKE 'wl-s7-%' AND r.ruleset_version = 'v0001'"
        ).fetchone()
        requests_spend = conn.execute(
            "SELECT sum(billed_cost_usd) FROM request_spans WHERE NOT coalesce(replay, false) "
            "AND reference_id LIKE 'wl-s7-%' AND ruleset_version = 'v0001'").fetchone()[0]
        versions = [r[0] for r in conn.execute("SELECT DISTINCT candidate_version FROM rollouts").fetchall()]
    assert result.before["images"] == images == 36
    assert result.before["spend_usd"] == pytest.approx(requests_spend)
    assert spend <= requests_spend
    assert result.candidate in versions
    html = result.report.read_text()
    assert "<img" in html and "Pareto" in html


@pytest.mark.parametrize("name", ["spend_analysis", "routing_loop"])
def test_notebooks_run_on_the_demo_store(demo, name, tmp_path):
    result, _, out = demo
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    env = {"APERTURE_DB": str(result.db), "APERTURE_OPTUNA_DB": str(out / "optuna.db")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    images = sum(1 for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images >= 3
    errors = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors


def test_every_image_the_candidate_served_is_paired_with_the_baseline(demo):
    result, text, _ = demo
    pair = result.extra["paired"]
    with duckdb.connect(str(result.db), read_only=True) as conn:
        served = conn.execute(
            "SELECT count(*), sum(billed_cost_usd) FROM request_spans WHERE NOT coalesce(replay, false) "
            "AND reference_id LIKE 'wl-s8-%' AND ruleset_version = ?", [result.candidate]).fetchone()
        without_twin = conn.execute(
            "SELECT count(*) FROM request_spans u WHERE NOT coalesce(u.replay, false) AND u.reference_id LIKE 'wl-s8-%' "
            "AND u.ruleset_version = ? AND u.route <> 'gpt-4o:high' AND NOT EXISTS (SELECT 1 FROM request_spans s "
            "WHERE coalesce(s.replay, false) AND s.reference_id = u.reference_id AND s.route = 'gpt-4o:high')",
            [result.candidate]).fetchone()[0]
        guard_stats = conn.execute("SELECT statistics FROM rollouts WHERE candidate_version = ? ORDER BY ts DESC LIMIT 1",
                                   [result.candidate]).fetchone()
        shadow_arms = {r[0] for r in conn.execute(
            "SELECT DISTINCT arm FROM request_spans WHERE coalesce(replay, false) AND reference_id LIKE 'wl-s8-%'").fetchall()}
    assert served[0] > 0 and without_twin == 0
    assert "canary" not in shadow_arms  # shadows never count as canary traffic
    assert guard_stats is not None and "paired" in str(guard_stats[0])  # the guard tested pairs
    rows = paired_requests(result.db, "wl-s8-", result.candidate, "gpt-4o:high")
    assert rows.height == served[0] and rows["baseline_cost"].null_count() == 0
    scored = rows.filter(rows["quality"].is_not_null())
    assert scored["baseline_quality"].null_count() == 0  # a scored request's twin is scored too
    assert pair["pairs"] == scored.height > 0
    assert pair["cost_usd"] == pytest.approx(scored["cost"].sum())
    assert pair["delta_low"] <= pair["quality_delta"] <= pair["delta_high"]
    assert "on the same" in text and "shadowed on gpt-4o:high" in text
