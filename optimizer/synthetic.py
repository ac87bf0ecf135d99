"""Synthetic observations for tests and benchmarks of the optimizer (no store needed).

Quality follows the physics the emulator has: text the model sees below ~4 px is lost, above
~8 px it is read, and smaller tiers see a little less. Traffic goes to one strong route; a
fraction of images is also "replayed" to other routes, as ``aperture replay`` would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from optimizer.data import Observations
from optimizer.routes import Route, candidate_routes, effective_scale_matrix

SMALL_TIERS = ("mini", "haiku", "flash", "nano")


def synthetic_observations(
    catalog: Mapping[str, Any],
    n: int = 400,
    *,
    seed: int = 0,
    strong: Route = Route("gpt-4o", "high"),
    replay_routes: Sequence[Route] = (),
    replay_every: int = 3,
) -> Observations:
    rng = np.random.default_rng(seed)
    width = rng.choice([400, 800, 1600, 2400], n)
    height = (width * rng.choice([0.75, 1.3], n)).astype(int)
    text = rng.choice([8.0, 12.0, 20.0, 32.0], n)
    routes = [strong, *[r for r in replay_routes if r != strong]]
    all_routes = candidate_routes(catalog)
    scale = effective_scale_matrix(catalog, all_routes, width, height)
    index = {r.key: all_routes.index(r) for r in routes}

    def quality(route: Route) -> np.ndarray:
        tier = 0.85 if any(t in route.model for t in SMALL_TIERS) else 1.0
        seen = text * scale[index[route.key]] * tier
        return np.clip((seen - 4.0) / 4.0, 0, 1) * 0.97 + rng.normal(0, 0.01, n)

    frames = []
    base = {"width": width, "height": height, "text_height_px": text}
    frames.append(pl.DataFrame({
        **base, "span_id": [f"s{i}" for i in range(n)], "trace_id": [f"t{i}" for i in range(n)], "route": strong.key,
        "replay": False, "quality": quality(strong), "input_tokens": 800, "image_tokens": 700, "output_tokens": 120,
        "billed_cost_usd": 0.003,
    }))
    for j, route in enumerate(r for r in routes if r != strong):
        keep = (np.arange(n) + j) % replay_every == 0
        q = quality(route)
        frames.append(pl.DataFrame({
            "width": width[keep], "height": height[keep], "text_height_px": text[keep],
            "span_id": [f"r{i}-{j}" for i in np.flatnonzero(keep)], "trace_id": [f"tr{i}" for i in np.flatnonzero(keep)],
            "route": route.key, "replay": True, "quality": q[keep], "input_tokens": 300, "image_tokens": 200,
            "output_tokens": 120, "billed_cost_usd": 0.0003,
        }))
    df = pl.concat(frames, how="diagonal_relaxed").with_columns(
        pl.lit("2026-11-25").alias("ts"), pl.lit("transcribe").alias("task"), pl.lit(1.0).alias("propensity"),
        pl.lit("active").alias("arm"),
    )
    return Observations(df)


DEFAULT_REPLAY = (
    Route("gpt-4o", "low"), Route("gpt-4o-mini", "low"), Route("gpt-4.1-mini", "high"), Route("gpt-4.1-mini", "low"),
    Route("gemini-2.5-flash", "auto"), Route("claude-haiku-4-5", "auto"),
)
