"""A quality model: how well would route r answer image i, for routes never taken on it.

Trained on every scored request (user traffic, exploration, replay) with features that carry
the physics of the problem: the text height the model *actually sees* (logged text height ×
the route's effective scale), the effective size, the task and the model tier. Gradient
boosting (scikit-learn) so it generalises across buckets to images never replayed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import KFold
from threadpoolctl import threadpool_limits

from optimizer.routes import Route

TASKS = ("transcribe", "extract", "describe")


@dataclass(frozen=True)
class ImageTable:
    """Per-image features, aligned arrays (one row per request; its largest image)."""

    width: np.ndarray
    height: np.ndarray
    text_height: np.ndarray  # NaN when unknown
    task: np.ndarray  # str

    def __len__(self) -> int:
        return len(self.width)


def design_matrix(images: ImageTable, route_index: np.ndarray, routes: Sequence[Route], scale: np.ndarray) -> np.ndarray:
    """Rows: one (image, route) pair each. ``scale`` is [route, image] effective scale."""
    n = len(route_index)
    idx = np.arange(n) if len(images) == n else None
    assert idx is not None, "one route per image row"
    s = scale[route_index, idx]
    long_side = np.maximum(images.width, images.height).astype(float)
    short_side = np.minimum(images.width, images.height).astype(float)
    eff_text = images.text_height * s
    models = sorted({r.model for r in routes})
    details = sorted({r.detail for r in routes})
    cols = [
        eff_text,
        np.log1p(np.nan_to_num(eff_text, nan=0.0)),
        s,
        long_side * s,
        long_side,
        long_side * short_side / 1e6,
        long_side / np.maximum(short_side, 1),
        images.text_height,
    ]
    cols += [(images.task == t).astype(float) for t in TASKS]
    route_models = np.array([routes[i].model for i in route_index])
    route_details = np.array([routes[i].detail for i in route_index])
    cols += [(route_models == m).astype(float) for m in models]
    cols += [(route_details == d).astype(float) for d in details]
    return np.column_stack(cols)


@dataclass
class QualityModel:
    """``route_penalty[r]``: how much to take off route r's predictions to get a lower
    confidence bound: its cross-validated over-prediction (if any, shrunk by sample size) plus
    ``z`` standard errors of its residual mean (z = 0.5 by default: at a few dozen replays per
    route a one-sigma bound leaves no room for any saving within a 1-point tolerance, and the
    canary guard is there to catch what the bound lets through). Routes never observed get a
    prohibitive penalty, so the search does not bet on a route the data does not cover."""

    routes: list[Route]
    model: HistGradientBoostingRegressor
    cv_mae: float
    cv_bias: float
    n_train: int
    route_penalty: np.ndarray
    route_observations: np.ndarray

    def predict_matrix(self, images: ImageTable, scale: np.ndarray, *, conservative: bool = True) -> np.ndarray:
        """q[r, i] for every candidate route and image, clipped to [0, 1]."""
        n = len(images)
        out = np.zeros((len(self.routes), n))
        with threadpool_limits(limits=1, user_api="openmp"):
            for r in range(len(self.routes)):
                X = design_matrix(images, np.full(n, r), self.routes, scale)
                penalty = self.route_penalty[r] if conservative else 0.0
                out[r] = np.clip(self.model.predict(X) - penalty, 0.0, 1.0)
        return out


def fit_quality_model(
    images: ImageTable, route_index: np.ndarray, scores: np.ndarray, routes: Sequence[Route], scale: np.ndarray, *,
    seed: int = 0, z: float = 0.5, unobserved_penalty: float = 1.0,
) -> QualityModel:
    """Fit on observed (image, route, score) rows; report cross-validated error for intervals."""
    X = design_matrix(images, route_index, routes, scale)
    y = np.asarray(scores, dtype=float)

    # Physics as a constraint: quality never falls when the model sees the text larger
    # (effective text height, its log, the effective scale and size). It keeps a small
    # replay sample from producing wiggles that the search would then exploit.
    monotone = np.zeros(X.shape[1], dtype=int)
    monotone[:4] = 1

    def make() -> HistGradientBoostingRegressor:
        return HistGradientBoostingRegressor(max_iter=200, learning_rate=0.08, max_leaf_nodes=15, min_samples_leaf=5,
                                             monotonic_cst=monotone, random_state=seed)

    residuals = np.zeros_like(y)
    folds = min(5, max(2, len(y) // 20))
    # One OpenMP thread: on a busy 2-core machine the pool's spin-waits cost more than they save.
    with threadpool_limits(limits=1, user_api="openmp"):
        for train, test in KFold(folds, shuffle=True, random_state=seed).split(X):
            m = make().fit(X[train], y[train])
            residuals[test] = np.clip(m.predict(X[test]), 0, 1) - y[test]
        final = make().fit(X, y)
    penalty = np.full(len(routes), unobserved_penalty)
    counts = np.bincount(route_index, minlength=len(routes))
    # Per-route residual spreads from a few dozen rows are themselves noise: use the pooled
    # spread, and shrink each route's over-prediction toward zero by its sample size.
    pooled_sd = float(residuals.std(ddof=1)) if len(residuals) > 1 else 0.5
    for r in range(len(routes)):
        res = residuals[route_index == r]
        if len(res) >= 2:
            bias = max(float(res.mean()), 0.0) * len(res) / (len(res) + 10)
            penalty[r] = bias + z * pooled_sd / np.sqrt(len(res))
    return QualityModel(list(routes), final, float(np.mean(np.abs(residuals))), float(np.mean(residuals)), len(y), penalty, counts)
