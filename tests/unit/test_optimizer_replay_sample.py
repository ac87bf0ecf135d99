"""The replay sample depends on the images, not on the span ids a run happened to draw."""

from __future__ import annotations

import uuid

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.replay import stratified_sample


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
