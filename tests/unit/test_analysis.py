"""collector.analysis on a store written through the real span writer (tests/store_fixture.py)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import optuna
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector import analysis
from collector.spend import spend_report
from collector.store import StoreNotFoundError, open_store
from tests.store_fixture import build_demo_like_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_like_store(tmp_path_factory.mktemp("store") / "aperture.duckdb", n_requests=120, seed=3)


@pytest.fixture(scope="module")
def images(store: Path) -> pl.DataFrame:
    with duckdb.connect(str(store), read_only=True) as conn:
        return conn.sql("SELECT * FROM image_spans").pl()


@pytest.fixture()
def empty_store(tmp_path: Path) -> Path:
    path = tmp_path / "empty.duckdb"
    with open_store(path):
        pass
    return path


@pytest.mark.parametrize("by", ["model", "team", "day", "detail", "size"])
def test_spend_by_totals_match_the_raw_rows_and_the_cli_report(store: Path, images: pl.DataFrame, by: str) -> None:
    df = analysis.spend_by(store, by)
    assert df["spend_usd"].sum() == pytest.approx(images["cost_usd"].sum())
    assert df["images"].sum() == images.height
    assert df["share"].sum() == pytest.approx(1.0)
    with open_store(store, read_only=True) as conn:
        report = spend_report(conn, by=by, top=0)
    assert {g.key: g.spend_usd for g in report.groups} == pytest.approx(dict(zip(df["key"], df["spend_usd"], strict=True)))


def test_spend_by_model_matches_a_polars_group_by(store: Path, images: pl.DataFrame) -> None:
    expected = images.group_by("model").agg(pl.col("cost_usd").sum()).sort("model")
    got = analysis.spend_by(store, "model").sort("key")
    assert got["key"].to_list() == expected["model"].to_list()
    assert got["spend_usd"].to_list() == pytest.approx(expected["cost_usd"].to_list())
    assert analysis.spend_by(store, "model")["spend_usd"].is_sorted(descending=True)


def test_spend_by_day_is_chronological_and_size_uses_known_buckets(store: Path) -> None:
    days = analysis.spend_by(store, "day")["key"].to_list()
    assert days == sorted(days) and len(days) == 5
    assert set(analysis.spend_by(store, "size")["key"]) <= {"<=512", "<=1024", "<=2048", ">2048", "unknown"}


def test_spend_by_since_filters_rows(store: Path, images: pl.DataFrame) -> None:
    cut = "2026-05-07"
    df = analysis.spend_by(store, "team", since=cut)
    expected = images.filter(pl.col("ts") >= pl.datetime(2026, 5, 7))["cost_usd"].sum()
    assert df["spend_usd"].sum() == pytest.approx(expected)


def test_unknown_grouping_and_negative_top_are_refused(store: Path) -> None:
    with pytest.raises(ValueError, match="by must be one of"):
        analysis.spend_by(store, "colour")
    with pytest.raises(ValueError, match="by must be one of"):
        analysis.cost_quantiles(store, "colour")
    with pytest.raises(ValueError, match="n must be"):
        analysis.top_costly_images(store, -1)


def test_image_costs_and_quantiles(store: Path, images: pl.DataFrame) -> None:
    costs = analysis.image_costs(store)
    assert costs.height == images.filter(pl.col("cost_usd").is_not_null()).height
    q = analysis.cost_quantiles(store)
    for row in q.iter_rows(named=True):
        assert row["p50_usd"] <= row["p90_usd"] <= row["p99_usd"] <= row["max_usd"]
        model_costs = costs.filter(pl.col("model") == row["key"])["cost_usd"]
        assert row["max_usd"] == pytest.approx(model_costs.max())
        assert row["images"] == model_costs.len()


def test_top_costly_images_are_the_most_expensive(store: Path, images: pl.DataFrame) -> None:
    top = analysis.top_costly_images(store, 7)
    assert top.height == 7
    assert top["cost_usd"].is_sorted(descending=True)
    assert top["cost_usd"].to_list() == pytest.approx(images["cost_usd"].drop_nulls().sort(descending=True).head(7).to_list())
    assert analysis.top_costly_images(store, 0).height == 0


def test_unneeded_detail_rows_follow_the_rule_and_savings_match(store: Path, images: pl.DataFrame) -> None:
    df = analysis.unneeded_detail(store)
    assert df.height > 0
    for row in df.iter_rows(named=True):
        large = (row["text_height_px"] or 0) >= 20
        small = max(row["width"], row["height"]) <= 512
        assert row["detail"] in ("high", "auto") and (large or small)
        assert row["reason"] == "+".join(r for r, on in (("large_text", large), ("small_image", small)) if on)
        tokens = row["tokens_billed"] if row["tokens_billed"] is not None else row["tokens_estimated"]
        per_token = (row["cost_usd"] or 0) / tokens if tokens else 0
        assert row["savings_usd"] == pytest.approx(max(tokens - row["tokens_low_estimate"], 0) * per_token)
    # every qualifying image is listed, none that does not qualify
    qualifying = images.filter(
        pl.col("detail").is_in(["high", "auto"])
        & ((pl.col("text_height_px") >= 20) | (pl.max_horizontal("width", "height") <= 512))
    )
    assert set(df["span_id"]) == set(qualifying["span_id"])
    with open_store(store, read_only=True) as conn:
        assert df["savings_usd"].sum() == pytest.approx(spend_report(conn).unneeded_detail.savings_usd)


def test_unneeded_detail_stricter_threshold_lists_fewer_images(store: Path) -> None:
    loose = analysis.unneeded_detail(store, text_height_px=10)
    strict = analysis.unneeded_detail(store, text_height_px=30)
    assert set(strict["span_id"]) < set(loose["span_id"])


def test_tokens_estimated_vs_billed(store: Path, images: pl.DataFrame) -> None:
    df = analysis.tokens_estimated_vs_billed(store)
    both = images.filter(pl.col("tokens_billed").is_not_null())
    assert df["tokens_billed"].sum() == both["tokens_billed"].sum()
    assert df["tokens_estimated"].sum() == both["tokens_estimated"].sum()
    for row in df.iter_rows(named=True):
        assert row["billed_over_estimated"] == pytest.approx(row["tokens_billed"] / row["tokens_estimated"])
        assert 0 <= row["mean_abs_error_pct"] < 10  # the fixture bills within ±6 % of the estimate


def test_eval_scores_by_route_joins_request_routes(store: Path) -> None:
    with duckdb.connect(str(store), read_only=True) as conn:
        scores = conn.sql(
            "SELECT r.route, e.* FROM eval_scores e JOIN request_spans r USING (span_id)"
        ).pl()
    df = analysis.eval_scores_by_route(store)
    assert df["requests"].sum() == scores.height
    assert (df["scored"] + df["not_evaluable"]).to_list() == df["requests"].to_list()
    row = df.filter(pl.col("evaluator") == "ocr_faithfulness").row(0, named=True)
    mine = scores.filter((pl.col("route") == row["route"]) & (pl.col("evaluator") == "ocr_faithfulness"))
    assert row["mean_score"] == pytest.approx(mine["score"].mean())
    only = analysis.eval_scores_by_route(store, evaluator="field_accuracy")
    assert set(only["evaluator"]) == {"field_accuracy"}


def test_failure_clusters_latest_run_only(store: Path) -> None:
    df = analysis.failure_clusters_latest(store)
    assert set(df["run_id"]) == {"run-0002"}
    assert df["size"].is_sorted(descending=True)
    assert all(isinstance(json.loads(x), list) for x in df["example_span_ids"])


def test_rollout_timeline_and_traffic(store: Path) -> None:
    timeline = analysis.rollout_timeline(store)
    assert timeline["ts"].is_sorted()
    assert timeline["decision"].to_list() == ["start", "extend", "promote", "start", "rollback"]
    traffic = analysis.traffic_by_ruleset(store)
    assert traffic["requests"].sum() == 120
    assert set(traffic["arm"]) == {"active", "canary", "explore"}


def test_table_counts(store: Path) -> None:
    counts = dict(analysis.table_counts(store).iter_rows())
    assert counts["request_spans"] == 120 and counts["rollouts"] == 5 and counts["dropped_spans"] == 0


def test_every_query_on_an_empty_store_returns_an_empty_frame(empty_store: Path) -> None:
    frames = [
        analysis.spend_by(empty_store, "day"),
        analysis.image_costs(empty_store),
        analysis.cost_quantiles(empty_store),
        analysis.top_costly_images(empty_store),
        analysis.unneeded_detail(empty_store),
        analysis.tokens_estimated_vs_billed(empty_store),
        analysis.eval_scores_by_route(empty_store),
        analysis.failure_clusters_latest(empty_store),
        analysis.rollout_timeline(empty_store),
        analysis.traffic_by_ruleset(empty_store),
    ]
    assert all(f.height == 0 and f.width > 0 for f in frames)


def test_connection_or_path_give_the_same_answer(store: Path) -> None:
    with open_store(store, read_only=True) as conn:
        assert analysis.spend_by(conn, "team").equals(analysis.spend_by(store, "team"))


def test_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError):
        analysis.spend_by(tmp_path / "nope.duckdb")
    assert not (tmp_path / "nope.duckdb").exists()


# ---------------------------------------------------------------- optimizer study


def _study(path: Path, points: list[tuple[float, float]]) -> str:
    url = f"sqlite:///{path}"
    study = optuna.create_study(study_name="aperture-routing", storage=url, direction="minimize")
    for cost, quality in points:
        trial = optuna.trial.create_trial(
            params={"x": cost}, distributions={"x": optuna.distributions.FloatDistribution(0, 100)},
            value=cost, user_attrs={"cost": cost, "quality": quality, "feasible": quality >= 0.5, "violation": 0.0},
        )
        study.add_trial(trial)
    failed = optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL)
    study.add_trial(failed)
    return url


def test_optimizer_trials_and_pareto_front(tmp_path: Path) -> None:
    points = [(1.0, 0.5), (2.0, 0.7), (2.5, 0.6), (3.0, 0.9), (4.0, 0.9), (0.5, 0.2)]
    _study(tmp_path / "optuna.db", points)
    trials = analysis.optimizer_trials(tmp_path / "optuna.db")
    assert trials.height == len(points)  # the failed trial is left out
    first = trials.filter(pl.col("number") == 0).row(0, named=True)
    assert (first["cost"], first["quality"], first["feasible"]) == (1.0, 0.5, True)
    assert json.loads(first["params"]) == {"x": 1.0}
    front = analysis.pareto_front(trials)
    assert list(zip(front["cost"], front["quality"], strict=True)) == [(0.5, 0.2), (1.0, 0.5), (2.0, 0.7), (3.0, 0.9)]


def test_optimizer_storage_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        analysis.optimizer_trials(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()
    optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'empty.db'}")  # schema, no study
    assert analysis.optimizer_trials(tmp_path / "empty.db").height == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 50)), min_size=0, max_size=25, unique_by=(lambda p: p[0], lambda p: p[1])))
def test_pareto_front_is_exactly_the_non_dominated_set(points: list[tuple[int, int]]) -> None:
    df = pl.DataFrame(
        {"number": list(range(len(points))), "cost": [float(c) for c, _ in points], "quality": [float(q) for _, q in points]},
        schema={"number": pl.Int64, "cost": pl.Float64, "quality": pl.Float64},
    )
    front = {(c, q) for c, q in zip(analysis.pareto_front(df)["cost"], analysis.pareto_front(df)["quality"], strict=True)}
    dominated = {
        (float(c), float(q)) for c, q in points
        if any(c2 <= c and q2 >= q and (c2, q2) != (c, q) for c2, q2 in points)
    }
    assert front == {(float(c), float(q)) for c, q in points} - dominated


def test_notebook_paths_env_then_demo_output_here_or_one_level_up(tmp_path: Path) -> None:
    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    assert analysis.notebook_paths({}, nb_dir) == (nb_dir / "demo-out/aperture.duckdb", str(nb_dir / "demo-out/optuna.db"))
    (tmp_path / "demo-out").mkdir()
    (tmp_path / "demo-out/aperture.duckdb").touch()
    store, study = analysis.notebook_paths({}, nb_dir)
    assert store == tmp_path / "demo-out/aperture.duckdb" and study == str(nb_dir / "demo-out/optuna.db")
    env = {"APERTURE_DB": "/x/a.duckdb", "APERTURE_OPTUNA_DB": "sqlite:////x/o.db"}
    assert analysis.notebook_paths(env, nb_dir) == (Path("/x/a.duckdb"), "sqlite:////x/o.db")


def test_open_read_only_refuses_writes_and_falls_back_to_an_empty_store(store: Path, tmp_path: Path) -> None:
    conn, message = analysis.open_read_only(store)
    try:
        assert message is None
        assert analysis.table_counts(conn).filter(pl.col("table") == "request_spans")["rows"][0] == 120
        with pytest.raises(duckdb.Error):
            conn.execute("DELETE FROM rollouts")
    finally:
        conn.close()
    conn, message = analysis.open_read_only(tmp_path / "absent.duckdb")
    try:
        assert message is not None and "absent.duckdb" in message
        assert analysis.spend_by(conn).height == 0
    finally:
        conn.close()
    assert not (tmp_path / "absent.duckdb").exists()
