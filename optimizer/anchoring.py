"""Anchoring the quality model's predictions to what was measured.

The optimizer predicts quality *differences* between routes: an image's predicted score on a
route is its measured score on the route it took plus the model's difference between the two
(``anchor_to_taken``), and wherever the image was actually measured on a route (its own request
or a replay), the measurement replaces the prediction (``observed_cells``, ``apply_cells``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from optimizer.routes import Route


def anchor_to_taken(quality: np.ndarray, taken: np.ndarray, measured: np.ndarray) -> np.ndarray:
    """Shift each image's predicted column so that the route it took predicts its measured score:
    ``q[r, i] = measured[i] + q[r, i] − q[taken[i], i]`` (clipped to [0, 1]). What is particular to
    the image (a hard page, an unlucky field) stays with it on every route; only the model's
    *difference* between routes is predicted. Works on [R, N] and on [B, R, N] arrays."""
    ok = (taken >= 0) & ~np.isnan(measured)
    cols = np.flatnonzero(ok)
    if len(cols) == 0:
        return quality
    out = quality.copy()
    own = quality[..., taken[cols], cols]  # [..., k]
    out[..., cols] = np.clip(measured[cols] + quality[..., cols] - own[..., None, :], 0.0, 1.0)
    return out


def observed_cells(traffic: pl.DataFrame, scored: pl.DataFrame, routes: Sequence[Route]) -> list[tuple[int, int, float]]:
    """(route, image, mean score) wherever a traffic image was measured on a candidate route,
    by its own request or a replay of it (matched on image hash and task)."""
    if "sha256" not in traffic.columns or "sha256" not in scored.columns:
        return []
    observed = (
        scored.filter(pl.col("sha256").is_not_null())
        .group_by("sha256", "task", "route").agg(pl.col("quality").mean())
    )
    index = {r.key: i for i, r in enumerate(routes)}
    by_image: dict[tuple[str, str], dict[int, float]] = {}
    for sha, task, route, q in observed.iter_rows():
        r = index.get(Route.parse(route).key)
        if r is not None:
            by_image.setdefault((sha, task), {})[r] = float(q)
    return [
        (r, i, q)
        for i, (sha, task) in enumerate(zip(traffic["sha256"].to_list(), traffic["task"].to_list(), strict=True))
        for r, q in by_image.get((sha, task), {}).items()
    ]


def apply_cells(quality: np.ndarray, cells: Sequence[tuple[int, int, float]]) -> int:
    """Set each (route, image) cell to its observed score; returns how many were set."""
    for r, i, q in cells:
        quality[..., r, i] = q
    return len(cells)


def anchor_observed(quality: np.ndarray, traffic: pl.DataFrame, scored: pl.DataFrame, routes: Sequence[Route]) -> int:
    """Replace predictions by what was observed where an image was actually sent on a route
    (its own request, or a replay of it): the model fills in only what nobody measured.
    Returns how many (route, image) cells were anchored."""
    return apply_cells(quality, observed_cells(traffic, scored, routes))
