"""The replay sample depends on the images, not on the span ids a run happened to draw."""

from __future__ import annotations

import uuid

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.replay import stratified_sample, targeted_sample


def traffic(n: int, seed: int) -> pl.DataFrame:
    import random

    rng = random.Random(seed)
    return pl.DataFrame({
        "span_id": [uuid.UUID(int=rng.getrandbits(128)).hex[:16] for _ in range(n)],
        "sha256": [f"{i:064x}" for i in range(n)],
        "task": [rng.choice(["transcribe", "extract", "describe"]) for _ in range(n)],
        "width": [rng.choice([300, 800, 1600, 3000]) for _ in range(n)],
        "height": [rng.choice([300, 800, 1200]) for _ in range(n)],
        "text_height_px": [rng.choice([None, 8.0, 12.0, 20.0, 30.0]) for _ in range(n)],
    })


@settings(max_examples=25, deadline=None)
@given(n=st.integers(20, 120), take=st.integers(1, 60), seed=st.integers(0, 10), other_ids=st.integers(0, 10**6))
def test_same_images_same_sample_whatever_the_span_ids(n: int, take: int, seed: int, other_ids: int) -> None:
    df = traffic(n, seed)
    renamed = df.with_columns(pl.Series("span_id", traffic(n, other_ids + 1000)["span_id"]))
    first = stratified_sample(df, take, seed=7)["sha256"].to_list()
    second = stratified_sample(renamed, take, seed=7)["sha256"].to_list()
    assert first == second
    assert len(first) == min(n, take) and len(set(first)) == len(first)


def observed_on(df: pl.DataFrame, route: str) -> pl.DataFrame:
    return df.with_columns(pl.lit(route).alias("route"))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 80), take=st.integers(0, 90), seed=st.integers(0, 10), other_ids=st.integers(0, 10**6),
       seen=st.integers(0, 40))
def test_targeted_sample_is_distinct_rows_of_the_pool_and_ignores_span_ids(n: int, take: int, seed: int,
                                                                         other_ids: int, seen: int) -> None:
    df = traffic(n, seed)
    observed = observed_on(traffic(seen, seed + 1), "gpt-4.1-mini:high")
    renamed = df.with_columns(pl.Series("span_id", traffic(n, other_ids + 1000)["span_id"]))
    savings = {"gpt-4.1-mini:high": 0.004, "gpt-4o:low": 0.001}
    first = targeted_sample(df, observed, savings, take, seed=3)
    assert first["sha256"].to_list() == targeted_sample(renamed, observed, savings, take, seed=3)["sha256"].to_list()
    picked = first["sha256"].to_list()
    assert len(picked) == min(n, take) and len(set(picked)) == len(picked)
    assert set(picked) <= set(df["sha256"].to_list()) and set(first.columns) == set(df.columns)


def test_targeted_sample_goes_where_the_saving_route_was_least_observed() -> None:
    small = {"task": "transcribe", "width": 800, "height": 600, "text_height_px": 8.0}
    large = {"task": "transcribe", "width": 800, "height": 600, "text_height_px": 30.0}
    df = pl.DataFrame([{**(small if i < 10 else large), "span_id": str(i), "sha256": f"{i:064x}"} for i in range(20)])
    # Large text was replayed ten times on the cheap route, small text never: replays go to small text.
    observed = observed_on(df.filter(pl.col("text_height_px") > 20), "gpt-4.1-mini:high")
    picked = targeted_sample(df, observed, {"gpt-4.1-mini:high": 0.004}, 5)
    assert picked["text_height_px"].to_list() == [8.0] * 5
    # Observations on a route that saves nothing do not count as coverage of the saving route.
    elsewhere = observed_on(df.filter(pl.col("text_height_px") > 20), "gpt-4o:high")
    assert sorted(targeted_sample(df, elsewhere, {"gpt-4.1-mini:high": 0.004}, 2)["text_height_px"].to_list()) == [8.0, 30.0]
    # No route saves anything: nothing is worth replaying.
    assert targeted_sample(df, observed, {"gpt-4o:high": 0.0}, 5).height == 0


def test_targeted_sample_prefers_the_larger_stratum_at_equal_coverage() -> None:
    rows = [{"task": "extract", "width": 800, "height": 600, "text_height_px": 8.0 if i < 15 else 30.0,
             "span_id": str(i), "sha256": f"{i:064x}"} for i in range(20)]
    df = pl.DataFrame(rows)
    picked = targeted_sample(df, observed_on(df.head(0), "x"), {"gpt-4.1-mini:high": 0.004}, 1)
    assert picked["text_height_px"].to_list() == [8.0]  # 15 images could move there, 5 in the other
