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

from collector.semconv import TASKS
from optimizer.routes import Route


@dataclass(frozen=True)
class ImageTable:
    """Per-image features, aligned arrays (one row per request; its largest image)."""

    width: np.ndarray
    height: np.ndarray
    text_height: np.ndarray  # NaN when unknown
    task: np.ndarray  # str

    def __len__(self) -> int:
        return len(self.width)

    def take(self, rows: np.ndarray) -> ImageTable:
        return ImageTable(self.width[rows], self.height[rows], self.text_height[rows], self.task[rows])


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
    """A fitted quality model and a bootstrap ensemble of it.

    ``model`` is fitted on every observation; ``members`` are refits on resamples of whole
    images (an image's replays stay together), so their spread says how far the data pins the
    prediction down *where it is used*: where many images of a kind read the same on a route,
    the members agree; where a route was seen on few images like this one, they scatter. The
    optimizer's quality constraint uses a lower quantile of the members' policy means, not a
    flat per-route penalty that would charge large-text images for small-text uncertainty.
    Routes observed on fewer than two rows are predicted 0 (never chosen on no evidence)."""

    routes: list[Route]
    model: HistGradientBoostingRegressor
    members: list[HistGradientBoostingRegressor]
    cv_mae: float
    cv_bias: float
    n_train: int
    route_observations: np.ndarray

    def _predict(self, model: HistGradientBoostingRegressor, images: ImageTable, scale: np.ndarray) -> np.ndarray:
        n = len(images)
        out = np.zeros((len(self.routes), n))
        for r in range(len(self.routes)):
            if self.route_observations[r] < 2 or n == 0:
                continue
            X = design_matrix(images, np.full(n, r), self.routes, scale)
            # Identical feature rows (same size, text height and task) are predicted once.
            unique, inverse = np.unique(X, axis=0, return_inverse=True)
            out[r] = np.clip(model.predict(unique), 0.0, 1.0)[inverse.reshape(-1)]
        return out

    def predict_matrix(self, images: ImageTable, scale: np.ndarray) -> np.ndarray:
        """q[r, i] for every candidate route and image, clipped to [0, 1]."""
        with threadpool_limits(limits=1, user_api="openmp"):
            return self._predict(self.model, images, scale)

    def predict_draws(self, images: ImageTable, scale: np.ndarray) -> np.ndarray:
        """q_b[b, r, i]: the same matrix under each bootstrap member."""
        with threadpool_limits(limits=1, user_api="openmp"):
            return np.stack([self._predict(m, images, scale) for m in self.members]) if self.members else \
                self._predict(self.model, images, scale)[None]


def _estimator(monotone: np.ndarray, seed: int) -> HistGradientBoostingRegressor:
    return HistGradientBoostingRegressor(max_iter=100, learning_rate=0.15, max_leaf_nodes=15, min_samples_leaf=5,
                                         monotonic_cst=monotone, random_state=seed)


def fit_quality_model(
    images: ImageTable, route_index: np.ndarray, scores: np.ndarray, routes: Sequence[Route], scale: np.ndarray, *,
    groups: np.ndarray | None = None, seed: int = 0, n_boot: int = 12, max_boot_groups: int = 4000,
) -> QualityModel:
    """Fit on observed (image, route, score) rows; cross-validate for the interval; refit on
    ``n_boot`` resamples of ``groups`` (image ids; one group per row when None).

    For large logs each member sees at most ``max_boot_groups`` groups (an m-out-of-n bootstrap:
    its spread then overstates the uncertainty, which errs on the safe side and keeps fitting
    time bounded)."""
    X = design_matrix(images, route_index, routes, scale)
    y = np.asarray(scores, dtype=float)

    # Physics as a constraint: quality never falls when the model sees the text larger
    # (effective text height, its log, the effective scale and size). It keeps a small
    # replay sample from producing wiggles that the search would then exploit.
    monotone = np.zeros(X.shape[1], dtype=int)
    monotone[:4] = 1

    residuals = np.zeros_like(y)
    folds = min(5, max(2, len(y) // 20))
    rng = np.random.default_rng(seed)
    group_ids = np.unique(groups if groups is not None else np.arange(len(y)), return_inverse=True)[1].reshape(-1)
    n_groups = int(group_ids.max()) + 1 if len(y) else 0
    members = []
    # One OpenMP thread: on a busy 2-core machine the pool's spin-waits cost more than they save.
    with threadpool_limits(limits=1, user_api="openmp"):
        for train, test in KFold(folds, shuffle=True, random_state=seed).split(X):
            m = _estimator(monotone, seed).fit(X[train], y[train])
            residuals[test] = np.clip(m.predict(X[test]), 0, 1) - y[test]
        final = _estimator(monotone, seed).fit(X, y)
        draw = min(n_groups, max_boot_groups)
        for b in range(n_boot if n_groups >= 10 else 0):
            picks = np.bincount(rng.integers(0, n_groups, draw), minlength=n_groups).astype(float)
            weight = picks[group_ids]
            keep = weight > 0
            members.append(_estimator(monotone, seed + 1 + b).fit(X[keep], y[keep], sample_weight=weight[keep]))
    counts = np.bincount(route_index, minlength=len(routes))
    return QualityModel(list(routes), final, members, float(np.mean(np.abs(residuals))), float(np.mean(residuals)),
                        len(y), counts)
