"""Failure clusters: which kinds of request fail, how often, since when, and what would fix it.

Per evaluator, failing scores are described by categorical tokens
(:mod:`evals.cluster_features`: model, detail, size / aspect / text-height buckets, format,
task, TF-IDF explanation terms). Identical token sets are grouped first (100k failures
usually collapse to a few hundred distinct combinations); the most frequent
``max_fit`` combinations are clustered by average-linkage agglomerative clustering on
Jaccard distance with a distance threshold (so k is found, and one cluster is a possible
answer); rarer combinations join the cluster of their nearest fitted combination.

A cluster's label is its most over-represented tokens (share in cluster / share among all
scored spans of that evaluator); its suggested fix is the cheapest route that passes on
images of the same size and text-height buckets.

    >>> clusters = find_failure_clusters("aperture.duckdb", min_size=3)   # doctest: +SKIP
    >>> write_clusters("aperture.duckdb", clusters)                       # doctest: +SKIP
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from collector.queries.evals import record_clusters
from collector.semconv import utc_now
from collector.store import open_store
from evals.cases import naive_utc
from evals.cluster_features import FEATURES, add_features, load_scored
from evals.cluster_fix import RouteFix, suggest_fix


@dataclass(frozen=True)
class Cluster:
    cluster_id: int
    evaluator: str
    label: str
    size: int
    example_span_ids: list[str]
    first_seen: datetime
    last_seen: datetime
    trend: str
    route: str | None
    fix: RouteFix | None
    features: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def suggested_fix(self) -> str | None:
        return self.fix.text if self.fix else None

    def printable(self) -> dict[str, Any]:
        return {
            "evaluator": self.evaluator,
            "label": self.label,
            "size": self.size,
            "trend": self.trend,
            "route": self.route,
            "suggested_fix": self.suggested_fix or "-",
            "examples": ", ".join(self.example_span_ids[:3]),
        }


# Routing-relevant features weigh more than incidental ones, so that a pattern like
# "this route fails on small text" is not split up by the formats and sizes it happens to hit.
TOKEN_WEIGHTS = (
    ("model=", 2.0),
    ("detail=", 2.0),
    ("text", 2.0),
    ("size", 1.5),
    ("term=", 1.5),
    ("task=", 1.0),
    ("format=", 1.0),
    ("aspect", 0.5),
)


def token_weight(token: str) -> float:
    return next((w for prefix, w in TOKEN_WEIGHTS if token.startswith(prefix)), 1.0)


def jaccard_distances(a: sp.csr_matrix, b: sp.csr_matrix) -> np.ndarray:
    """Dense weighted-Jaccard distance matrix between the rows of ``a`` and ``b``.

    Rows hold sqrt(weight) per present token, so ``a @ b.T`` is the weight of the
    intersection and the squared row norms are the weights of each set.
    """
    inter = (a @ b.T).toarray().astype(np.float64)
    na = np.asarray(a.multiply(a).sum(axis=1)).ravel()[:, None]
    nb = np.asarray(b.multiply(b).sum(axis=1)).ravel()[None, :]
    union = na + nb - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = np.where(union > 0, inter / union, 1.0)
    return np.clip(1.0 - sim, 0.0, 1.0)


def _agglomerate(x: sp.csr_matrix, threshold: float) -> np.ndarray:
    if x.shape[0] == 1:
        return np.zeros(1, dtype=int)
    from sklearn.cluster import AgglomerativeClustering

    model = AgglomerativeClustering(
        n_clusters=None, distance_threshold=threshold, metric="precomputed", linkage="average"
    )
    return np.asarray(model.fit_predict(jaccard_distances(x, x)), dtype=int)


def _nearest(x: sp.csr_matrix, fit: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    idx = np.empty(x.shape[0], dtype=int)
    dist = np.empty(x.shape[0])
    for start in range(0, x.shape[0], 4096):  # bounded memory: 4096 x |fit| at a time
        d = jaccard_distances(x[start : start + 4096], fit)
        idx[start : start + 4096] = d.argmin(axis=1)
        dist[start : start + 4096] = d.min(axis=1)
    return idx, dist


def cluster_token_sets(
    sets: list[frozenset[str]],
    counts: list[int] | None = None,
    *,
    threshold: float = 0.5,
    max_fit: int = 1500,
    min_count: int | None = None,
) -> np.ndarray:
    """Cluster label per token set (distinct combinations, most frequent first); -1 = noise.

    Combinations seen at least ``min_count`` times (default: 0.1 % of all failures, at
    least 2) are clustered (at most ``max_fit``);
    rarer ones join the nearest cluster when within ``threshold``, otherwise they are
    clustered among themselves, so that one-off combinations neither blur the frequent
    patterns (average linkage counts every combination once) nor vanish.
    """
    n = len(sets)
    if n <= 1:
        return np.zeros(n, dtype=int)
    counts = counts if counts is not None else [2] * n
    if min_count is None:
        min_count = max(2, -(-sum(counts) // 1000))
    vocab = {t: i for i, t in enumerate(sorted({t for s in sets for t in s}))}
    rows = [i for i, s in enumerate(sets) for _ in s]
    cols = [vocab[t] for s in sets for t in s]
    vals = [token_weight(t) ** 0.5 for s in sets for t in s]
    x = sp.csr_matrix((np.asarray(vals), (rows, cols)), shape=(n, len(vocab)))
    frequent = [i for i in range(n) if counts[i] >= min_count][:max_fit] or list(
        range(min(n, max_fit))
    )
    labels = np.full(n, -1, dtype=int)
    labels[frequent] = _agglomerate(x[frequent], threshold)
    rest = np.setdiff1d(np.arange(n), frequent)
    if len(rest):
        idx, dist = _nearest(x[rest], x[frequent])
        near = dist <= threshold
        labels[rest[near]] = labels[np.asarray(frequent)[idx[near]]]
        orphans = rest[~near][:max_fit]
        if len(orphans):
            labels[orphans] = _agglomerate(x[orphans], threshold) + labels.max() + 1
    return labels


def _token_sets(combos: pl.DataFrame) -> list[frozenset[str]]:
    return [
        frozenset(v for v in row if v is not None) for row in combos.select(FEATURES).iter_rows()
    ]


def _display(token: str) -> str:
    return token.removeprefix("model=").replace("term=", "")


def trend(times: pl.Series, all_times: pl.Series) -> str:
    """rising / steady / falling: the cluster's share of scored spans, 2nd half vs 1st half."""
    lo, hi = all_times.min(), all_times.max()
    if lo is None or hi is None or lo == hi:
        return "steady"
    mid = lo + (hi - lo) / 2  # type: ignore[operator]
    first_all = int((all_times < mid).sum())
    second_all = len(all_times) - first_all
    first = int((times < mid).sum()) / max(first_all, 1)
    second = int((times >= mid).sum()) / max(second_all, 1)
    if first == 0 and second == 0:
        return "steady"
    if first == 0 or second / first > 1.25:
        return "rising"
    if second == 0 or second / first < 0.8:
        return "falling"
    return "steady"


def _token_counts(df: pl.DataFrame) -> dict[str, int]:
    """Rows holding each token (a term may sit in either term column, never in both)."""
    counts: dict[str, int] = {}
    for col in FEATURES:
        vc = df[col].drop_nulls().value_counts()
        for tok, cnt in zip(vc[col].to_list(), vc["count"].to_list(), strict=True):
            counts[tok] = counts.get(tok, 0) + int(cnt)
    return counts


def _label(
    members: pl.DataFrame, all_rows: pl.DataFrame, top: int = 4
) -> tuple[str, dict[str, dict[str, float]]]:
    n_all, n = len(all_rows), len(members)
    base = _token_counts(all_rows)
    stats: dict[str, dict[str, float]] = {}
    for tok, cnt in _token_counts(members).items():
        share = cnt / n
        if share >= 0.6:
            lift = share / max(base.get(tok, cnt) / n_all, 1e-9)
            stats[tok] = {"share": round(share, 4), "lift": round(lift, 3)}
    ranked = sorted(stats, key=lambda t: (-stats[t]["lift"], -stats[t]["share"], t))
    chosen = [t for t in ranked if stats[t]["lift"] >= 1.25][:top] or ranked[:1]
    label = " · ".join(_display(t) for t in chosen) or "mixed failures"
    return label, {t: stats[t] for t in ranked[:8]}


def _mode(s: pl.Series) -> str | None:
    vc = s.drop_nulls().value_counts(sort=True)
    return vc[s.name][0] if len(vc) else None


def find_failure_clusters(
    db_path: str | Path,
    *,
    since: datetime | timedelta | None = None,
    min_size: int = 3,
    evaluators: list[str] | None = None,
    threshold: float = 0.5,
    max_fit: int = 1500,
    examples: int = 5,
) -> list[Cluster]:
    """Clusters of failing scores (largest first), per evaluator."""
    if isinstance(since, timedelta):
        since = utc_now() - since
    elif since is not None:
        since = naive_utc(since)
    with open_store(db_path, read_only=True) as conn:
        df = load_scored(conn, since=since)
    if evaluators is not None:
        df = df.filter(pl.col("evaluator").is_in(evaluators))
    out: list[Cluster] = []
    for (name,), scored in df.partition_by("evaluator", as_dict=True, maintain_order=True).items():
        out.extend(_clusters_for(str(name), scored, min_size, threshold, max_fit, examples))
    out.sort(key=lambda c: (-c.size, c.evaluator, c.label))
    return [Cluster(**{**c.__dict__, "cluster_id": i}) for i, c in enumerate(out)]


def _clusters_for(
    evaluator: str,
    scored: pl.DataFrame,
    min_size: int,
    threshold: float,
    max_fit: int,
    examples: int,
) -> list[Cluster]:
    scored = add_features(scored)
    failing = scored.filter(~pl.col("passed"))
    if len(failing) < min_size:
        return []
    combos = (
        failing.group_by(FEATURES)
        .agg(pl.len().alias("n"))
        .sort(["n", *FEATURES], descending=[True] + [False] * len(FEATURES), nulls_last=True)
    )
    labels = cluster_token_sets(
        _token_sets(combos), combos["n"].to_list(), threshold=threshold, max_fit=max_fit
    )
    combos = combos.with_columns(pl.Series("cluster", labels))
    failing = failing.join(
        combos.select([*FEATURES, "cluster"]), on=list(FEATURES), how="left", nulls_equal=True
    )
    out = []
    for (cid,), members in failing.partition_by("cluster", as_dict=True).items():
        if cid < 0 or len(members) < min_size:
            continue
        label, feats = _label(members, scored)
        route = _mode(members["route"])
        fix = suggest_fix(scored, members, route)
        recent = members.sort("ts", descending=True)["span_id"].head(examples).to_list()
        out.append(
            Cluster(
                cluster_id=int(cid),
                evaluator=evaluator,
                label=label,
                size=len(members),
                example_span_ids=recent,
                first_seen=members["ts"].min(),  # type: ignore[arg-type]
                last_seen=members["ts"].max(),  # type: ignore[arg-type]
                trend=trend(members["ts"], scored["ts"]),
                route=route,
                fix=fix,
                features=feats,
            )
        )
    return out


def cluster_rows(
    clusters: list[Cluster], run_id: str, created_at: datetime
) -> list[dict[str, Any]]:
    return [
        {
            "run_id": run_id,
            "cluster_id": c.cluster_id,
            "created_at": created_at,
            "evaluator": c.evaluator,
            "label": c.label,
            "size": c.size,
            "example_span_ids": c.example_span_ids,
            "first_seen": c.first_seen,
            "last_seen": c.last_seen,
            "trend": c.trend,
            "suggested_fix": c.suggested_fix,
            "fix_route": c.fix.route if c.fix else None,
            "fix_cost_delta_usd": c.fix.cost_delta_usd if c.fix else None,
            "features": {"route": c.route, "tokens": c.features},
        }
        for c in clusters
    ]


def write_clusters(
    db_path: str | Path, clusters: list[Cluster], *, run_id: str | None = None
) -> str:
    """Append one clustering run to ``failure_clusters``; returns its run id."""
    run_id = run_id or uuid.uuid4().hex[:12]
    record_clusters(db_path, cluster_rows(clusters, run_id, utc_now()))
    return run_id
