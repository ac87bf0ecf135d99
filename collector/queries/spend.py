"""Image spend over ``image_spans``: the one implementation behind ``aperture spend``
(``collector.spend.spend_report``) and the notebooks' helpers (``collector.analysis``).

The rules, decided once here:

- **Group key.** Every key is text; a missing value (no model, no team, no timestamp, no
  size) is ``'unknown'``, and a stored value that already reads ``unknown`` lands in the same
  group: a report never shows two rows with the same key. Days are ``YYYY-MM-DD``.
- **Order.** Costliest group first; equal spend is ordered by the key's text, ``unknown``
  included (so two runs over the same rows print the same table).
- **Detail not needed.** An image sent at ``high`` or ``auto`` detail, compared without
  case (the gateway accepts ``HIGH`` as the providers do, and stores what the client sent),
  whose text is large (``text_height_px`` ≥ threshold) or which is small (width *and*
  height ≤ the small side). A missing size or text height proves nothing: such a row is
  neither small nor large-text (DuckDB's ``greatest`` would skip a NULL side).
- **Saving.** ``(tokens − tokens_low_estimate) × the row's cost per token``, never negative,
  with tokens the billed count or else the estimate.
- **Costliest images.** Only images with a cost; equal cost in insertion order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb

Query = tuple[str, list[Any]]

# width/height compared separately: DuckDB's greatest() is several times slower here.
SIZE_BUCKET = (
    "CASE WHEN width IS NULL OR height IS NULL THEN 'unknown' "
    "WHEN width <= 512 AND height <= 512 THEN '<=512' "
    "WHEN width <= 1024 AND height <= 1024 THEN '<=1024' "
    "WHEN width <= 2048 AND height <= 2048 THEN '<=2048' ELSE '>2048' END"
)
#: Group expression per ``by`` (raw values; ``group_totals`` turns NULL into ``'unknown'``
#: after grouping, which is cheaper than a coalesce over every row).
GROUPINGS: dict[str, str] = {
    "model": "model",
    "team": "team",
    "day": "ts::DATE",
    "detail": "detail",
    "size": SIZE_BUCKET,
}
UNKNOWN = "unknown"
_TOKENS = "coalesce(tokens_billed, tokens_estimated)"
#: What low detail would have saved on one image row, at that row's cost per token.
SAVINGS_SQL = f"greatest({_TOKENS} - tokens_low_estimate, 0) * (cost_usd / nullif({_TOKENS}, 0))"
# In a WHERE clause NULL is false, so these need no coalesce there.
_LARGE_TEXT = "text_height_px >= ?"
_SMALL = "(width <= ? AND height <= ?)"
_DETAILED = "lower(detail) IN ('high', 'auto')"
IMAGE_COLUMNS = (
    "trace_id, span_id, ts, sha256, model, team, detail, width, height, "
    "tokens_estimated, tokens_billed, cost_usd"
)


@dataclass(frozen=True)
class DetailRule:
    """When high detail was not needed: text at least this tall, or an image this small."""

    text_height_px: float = 20.0
    small_long_side_px: int = 512

    def params(self) -> list[Any]:
        """Parameters of ``_LARGE_TEXT`` then ``_SMALL``."""
        return [self.text_height_px, self.small_long_side_px, self.small_long_side_px]


@dataclass(frozen=True)
class GroupTotals:
    key: str
    spend_usd: float
    images: int
    tokens_estimated: int
    tokens_billed: int
    unneeded_detail_images: int
    savings_usd: float
    large_text: int
    small_image: int


def image_source(conn: duckdb.DuckDBPyConnection) -> str:
    """The table behind ``image_spans`` (its ``rowid`` breaks ties cheaply; a view has none).

    A store still at schema v1 (opened read-only before any writer migrated it) has
    ``image_spans`` as a table.
    """
    found = conn.execute(
        "SELECT count(*) FROM duckdb_tables() "
        "WHERE table_name = 'image_span_log' AND schema_name = current_schema()"
    ).fetchall()
    return "image_span_log" if found[0][0] else "image_spans"


def _since(start: datetime | None) -> tuple[str, list[Any]]:
    return ("WHERE ts >= ?", [start]) if start else ("WHERE true", [])


def group_totals(
    conn: duckdb.DuckDBPyConnection, by: str, start: datetime | None, rule: DetailRule
) -> list[GroupTotals]:
    """Spend, tokens and the detail-not-needed totals per group, costliest first.

    One grouped scan; 0/1 columns are summed instead of FILTER clauses (one predicate
    evaluation per row).
    """
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {', '.join(GROUPINGS)}; got {by!r}")
    where, params = _since(start)
    large, small = f"coalesce({_LARGE_TEXT}, false)", f"coalesce({_SMALL}, false)"
    unneeded = f"coalesce({_DETAILED}, false) AND ({large} OR {small})"
    rows = conn.execute(
        "SELECT k, sum(cost_usd), count(*), sum(tokens_estimated), sum(tokens_billed), "
        "sum(u), sum(u * savings), sum(u * lt), sum(u * sm) FROM ("
        f"  SELECT {GROUPINGS[by]} AS k, cost_usd, tokens_estimated, tokens_billed, "
        f"  ({unneeded})::INTEGER AS u, ({large})::INTEGER AS lt, ({small})::INTEGER AS sm, "
        f"  {SAVINGS_SQL} AS savings FROM {image_source(conn)} {where}"
        ") GROUP BY k",
        [*rule.params(), *rule.params(), *params],
    ).fetchall()
    merged: dict[str, list[float]] = {}
    for k, *values in rows:
        key = UNKNOWN if k is None else str(k)
        into = merged.setdefault(key, [0.0] * len(values))
        for i, value in enumerate(values):
            into[i] += value or 0
    totals = [
        GroupTotals(key, float(s), int(n), int(te), int(tb), int(u), float(sv), int(lt), int(sm))
        for key, (s, n, te, tb, u, sv, lt, sm) in merged.items()
    ]
    return sorted(totals, key=lambda g: (-g.spend_usd, g.key))


def costliest_images(start: datetime | None, n: int, source: str = "image_spans") -> Query:
    """The ``n`` most expensive images (``IMAGE_COLUMNS``); ties in insertion order when
    ``source`` is the log table (``image_source``), by span id on the view."""
    where, params = _since(start)
    tie = "rowid" if source == "image_span_log" else "span_id"
    return (
        f"SELECT {IMAGE_COLUMNS} FROM {source} {where} AND cost_usd IS NOT NULL "
        f"ORDER BY cost_usd DESC, {tie} LIMIT ?",
        [*params, n],
    )


def unneeded_detail_images(
    start: datetime | None, rule: DetailRule, n: int | None = None, source: str = "image_spans"
) -> Query:
    """Images whose high detail was not needed, largest saving first (all of them, or ``n``):
    ``IMAGE_COLUMNS``, ``text_height_px``, ``tokens_low_estimate``, ``reason``
    (``large_text``, ``small_image`` or both joined by ``+``) and ``savings_usd``."""
    where, params = _since(start)
    tie = "rowid" if source == "image_span_log" else "span_id"
    limit, limit_params = ("LIMIT ?", [n]) if n is not None else ("", [])
    return (
        f"SELECT {IMAGE_COLUMNS}, text_height_px, tokens_low_estimate, "
        f"concat_ws('+', CASE WHEN {_LARGE_TEXT} THEN 'large_text' END, "
        f"CASE WHEN {_SMALL} THEN 'small_image' END) AS reason, "
        f"coalesce({SAVINGS_SQL}, 0)::DOUBLE AS savings_usd "
        f"FROM {source} {where} AND {_DETAILED} AND ({_LARGE_TEXT} OR {_SMALL}) "
        f"ORDER BY savings_usd DESC, {tie} {limit}",
        [*rule.params(), *params, *rule.params(), *limit_params],
    )


def cache_savings(conn: duckdb.DuckDBPyConnection, start: datetime | None) -> tuple[int, float]:
    """Requests answered from the response cache and what they would have cost (``request_spans``
    of schema 4 or later; an older file has no such column and reports none)."""
    # DESCRIBE binds the view; ``duckdb_columns()`` lists a view's columns only once something
    # in this session has bound it, so a fresh process reading the file would see none.
    columns = {row[0] for row in conn.execute("DESCRIBE SELECT * FROM request_spans").fetchall()}
    if "cache_saved_usd" not in columns:
        return 0, 0.0
    where, params = _since(start)
    row = conn.execute(
        f"SELECT count(*), sum(cache_saved_usd) FROM request_spans {where} AND cache_hit", params
    ).fetchall()[0]
    return int(row[0] or 0), float(row[1] or 0.0)
