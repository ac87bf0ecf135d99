"""What the optimizer learns from: scored requests with their image features and route.

One row per successful request span, with the features the router routes by (its largest
image's size; the smallest text height of any image), the route it took, the propensity of
that route, and its quality: the score of the evaluator that judges its task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from collector.queries.optimizer import mean_scores, routed_requests
from collector.semconv import QUALITY_EVALUATORS
from collector.store import open_store

__all__ = ["QUALITY_EVALUATORS", "Observations", "load_observations"]


@dataclass(frozen=True)
class Observations:
    requests: pl.DataFrame  # every successful request with images (quality may be null)

    @property
    def scored(self) -> pl.DataFrame:
        return self.requests.filter(pl.col("quality").is_not_null())

    @property
    def traffic(self) -> pl.DataFrame:
        """User traffic (not replay): the images a policy is optimised over."""
        return self.requests.filter(~pl.col("replay"))


def load_observations(db: str | Path, *, since: datetime | None = None, evaluators: Mapping[str, str] = QUALITY_EVALUATORS) -> Observations:
    with open_store(db, read_only=True) as conn:
        requests = routed_requests(conn, since=since)
        scores = mean_scores(conn)
    mapping = pl.DataFrame({"task": list(evaluators), "evaluator": list(evaluators.values())})
    quality = (
        requests.select("span_id", "task")
        .join(mapping, on="task", how="left")
        .join(scores, on=["span_id", "evaluator"], how="left")
        .select("span_id", pl.col("score").alias("quality"))
    )
    # A fixed row order (not arrival order, which concurrency shuffles): the same traces give the
    # same folds, bootstrap members and search, hence the same proposal.
    out = requests.join(quality, on="span_id", how="left")
    return Observations(out.sort(["sha256", "task", "route", "ts", "span_id"], nulls_last=True))
