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

from collector.semconv import QUALITY_EVALUATORS
from collector.store import fetch_df, open_store

_REQUESTS_SQL = """
WITH img AS (
    SELECT trace_id, request_span_id,
           arg_max(width, width * height) AS width,
           arg_max(height, width * height) AS height,
           arg_max(sha256, width * height) AS sha256,
           min(text_height_px) AS text_height_px,
           count(*) AS n_images,
           sum(tokens_billed) AS image_tokens,
           sum(cost_usd) AS image_cost_usd
    FROM image_spans GROUP BY trace_id, request_span_id
)
SELECT r.trace_id, r.span_id, r.ts, r.route, r.model, r.arm, coalesce(r.propensity, 1.0) AS propensity,
       coalesce(r.task, 'transcribe') AS task, coalesce(r.replay, false) AS replay,
       r.ruleset_version, r.input_tokens, r.output_tokens, r.billed_cost_usd,
       img.sha256, img.width, img.height, img.text_height_px, img.n_images, img.image_tokens, img.image_cost_usd
FROM request_spans r
JOIN img ON img.trace_id = r.trace_id AND img.request_span_id = r.span_id
WHERE r.status = 'ok' AND r.route IS NOT NULL AND ($since IS NULL OR r.ts >= $since)
"""

_SCORES_SQL = """
SELECT span_id, evaluator, avg(score) AS score
FROM eval_scores WHERE status = 'scored' AND score IS NOT NULL
GROUP BY span_id, evaluator
"""


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
        requests = fetch_df(conn, _REQUESTS_SQL, {"since": since})
        scores = fetch_df(conn, _SCORES_SQL)
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
