"""Spend report over ``image_spans``: where the money went, and detail that was not needed.

Grouped by model, team, day, detail or size bucket (long side ≤512, ≤1024,
≤2048, >2048), with the costliest images and an estimate of what lower detail
would have saved. An image sent at ``high``/``auto`` detail did not need it when
its text is large (``text_height_px`` ≥ threshold: large text reads fine at low
detail) or the image is small (long side ≤ 512); the saving is
``(tokens_billed − tokens_low_estimate) × cost per token`` of that row.

Example::

    with open_store("aperture.duckdb", read_only=True) as conn:
        report = spend_report(conn, by="team", since="7d")
    rich.print(to_table(report))
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb
from rich.table import Table

# width/height compared separately: DuckDB's greatest() is several times slower here.
SIZE_BUCKET = (
    "CASE WHEN width IS NULL OR height IS NULL THEN 'unknown' "
    "WHEN width <= 512 AND height <= 512 THEN '<=512' "
    "WHEN width <= 1024 AND height <= 1024 THEN '<=1024' "
    "WHEN width <= 2048 AND height <= 2048 THEN '<=2048' ELSE '>2048' END"
)
GROUPINGS: dict[str, str] = {
    "model": "model",
    "team": "team",
    "day": "ts::DATE",
    "detail": "detail",
    "size": SIZE_BUCKET,
}
_TOKENS = "coalesce(tokens_billed, tokens_estimated)"
#: What low detail would have saved on one image row, at that row's cost per token (shared
#: with the notebooks' queries in ``collector.analysis``, so both agree to the cent).
SAVINGS_SQL = f"greatest({_TOKENS} - tokens_low_estimate, 0) * (cost_usd / nullif({_TOKENS}, 0))"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class SpendGroup:
    key: str
    spend_usd: float
    images: int
    tokens_estimated: int
    tokens_billed: int
    unneeded_detail_images: int = 0
    savings_usd: float = 0.0


@dataclass(frozen=True)
class CostlyImage:
    trace_id: str
    span_id: str
    ts: datetime | None
    sha256: str | None
    model: str | None
    team: str | None
    detail: str | None
    width: int | None
    height: int | None
    tokens_billed: int | None
    cost_usd: float | None
    savings_usd: float | None = None


@dataclass(frozen=True)
class UnneededDetail:
    images: int
    savings_usd: float
    large_text: int
    small_image: int
    examples: list[CostlyImage] = field(default_factory=list)


@dataclass(frozen=True)
class SpendReport:
    by: str
    since: datetime | None
    spend_usd: float
    images: int
    tokens_estimated: int
    tokens_billed: int
    groups: list[SpendGroup]
    top_images: list[CostlyImage]
    unneeded_detail: UnneededDetail
    text_height_threshold_px: float
    small_long_side_px: int
    cache_hits: int = 0
    cache_saved_usd: float = 0.0  # what the response cache's hits would have cost


def parse_since(
    value: str | datetime | date | timedelta | None, now: datetime | None = None
) -> datetime | None:
    """``"7d"``, ``"24h"``, ``"30m"``, ``"2w"``, an ISO date/time, a datetime or a timedelta
    → naive UTC datetime (the store's convention)."""
    if value is None or value == "":
        return None
    now = now or datetime.now(UTC).replace(tzinfo=None)
    if isinstance(value, timedelta):
        return now - value
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    match = _DURATION.match(value)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        return parse_since(datetime.fromisoformat(value.strip()), now)
    except ValueError as exc:
        raise ValueError(f"since: expected e.g. 7d, 24h or an ISO date, got {value!r}") from exc


def _images(rows: list[tuple[Any, ...]]) -> list[CostlyImage]:
    return [CostlyImage(*row) for row in rows]


_IMAGE_COLUMNS = (
    "trace_id, span_id, ts, sha256, model, team, detail, width, height, tokens_billed, cost_usd"
)


def _image_table(conn: duckdb.DuckDBPyConnection) -> str:
    """The table behind ``image_spans`` (its ``rowid`` breaks ties cheaply; a view has none).

    A store still at schema v1 (opened read-only before any writer migrated it)
    has ``image_spans`` as a table.
    """
    found = conn.execute(
        "SELECT count(*) FROM duckdb_tables() "
        "WHERE table_name = 'image_span_log' AND schema_name = current_schema()"
    ).fetchall()
    return "image_span_log" if found[0][0] else "image_spans"


def spend_report(
    conn: duckdb.DuckDBPyConnection,
    by: str = "model",
    since: str | datetime | date | timedelta | None = None,
    top: int = 10,
    *,
    text_height_px: float = 20.0,
    small_long_side_px: int = 512,
) -> SpendReport:
    """Aggregate ``image_spans`` (see module docstring).

    One grouped scan gives spend and the detail-not-needed totals per group;
    two top-N queries give the costliest images and the largest savings.
    Ties are broken by insertion order (``rowid``), which keeps top-N cheap.
    """
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {', '.join(GROUPINGS)}; got {by!r}")
    if top < 0:
        raise ValueError("top must be >= 0")
    start = parse_since(since)
    source = _image_table(conn)
    where, params = ("WHERE ts >= ?", [start]) if start else ("", [])
    large_text = "coalesce(text_height_px >= ?, false)"
    small = "coalesce(width <= ? AND height <= ?, false)"
    unneeded = f"detail IN ('high', 'auto') AND ({large_text} OR {small})"
    unneeded_params = [text_height_px, small_long_side_px, small_long_side_px]
    # 0/1 columns summed instead of FILTER clauses: one predicate evaluation per row.
    grouped = conn.execute(
        "SELECT k, sum(cost_usd) AS spend, count(*), sum(tokens_estimated), sum(tokens_billed), "
        "sum(u), sum(u * savings), sum(u * lt), sum(u * sm) FROM ("
        f"  SELECT {GROUPINGS[by]} AS k, cost_usd, tokens_estimated, tokens_billed, "
        f"  ({unneeded})::INTEGER AS u, ({large_text})::INTEGER AS lt, "
        f"  ({small})::INTEGER AS sm, {SAVINGS_SQL} AS savings FROM {source} {where}"
        ") GROUP BY k ORDER BY spend DESC NULLS LAST, k NULLS LAST",
        [*unneeded_params, text_height_px, small_long_side_px, small_long_side_px, *params],
    ).fetchall()
    groups = [
        SpendGroup(
            "unknown" if k is None else str(k),
            float(s or 0.0),
            int(n),
            int(te or 0),
            int(tb or 0),
            int(un or 0),
            float(sv or 0.0),
        )
        for k, s, n, te, tb, un, sv, _, _ in grouped
    ]
    and_where = f"{where} {'AND' if where else 'WHERE'}"
    top_images = _images(
        conn.execute(
            f"SELECT {_IMAGE_COLUMNS} FROM {source} {where} "
            "ORDER BY cost_usd DESC NULLS LAST, rowid LIMIT ?",
            [*params, top],
        ).fetchall()
    )
    n_unneeded = sum(g.unneeded_detail_images for g in groups)
    # In a WHERE clause NULL is false anyway, and plain comparisons filter faster
    # than `IN (...)` / coalesce over millions of rows.
    plain = "(detail = 'high' OR detail = 'auto') AND (text_height_px >= ? OR (width <= ? AND height <= ?))"
    examples = _images(
        []
        if not n_unneeded or not top
        else conn.execute(
            f"SELECT {_IMAGE_COLUMNS}, {SAVINGS_SQL} AS savings FROM {source} "
            f"{and_where} {plain} ORDER BY savings DESC NULLS LAST, rowid LIMIT ?",
            [*params, *unneeded_params, top],
        ).fetchall()
    )
    cache_hits, cache_saved = _cache_savings(conn, where, params)
    return SpendReport(
        by=by,
        since=start,
        spend_usd=sum(g.spend_usd for g in groups),
        images=sum(g.images for g in groups),
        tokens_estimated=sum(g.tokens_estimated for g in groups),
        tokens_billed=sum(g.tokens_billed for g in groups),
        groups=groups,
        top_images=top_images,
        unneeded_detail=UnneededDetail(
            images=sum(g.unneeded_detail_images for g in groups),
            savings_usd=sum(g.savings_usd for g in groups),
            large_text=sum(int(row[7] or 0) for row in grouped),
            small_image=sum(int(row[8] or 0) for row in grouped),
            examples=examples,
        ),
        text_height_threshold_px=text_height_px,
        small_long_side_px=small_long_side_px,
        cache_hits=cache_hits,
        cache_saved_usd=cache_saved,
    )


def _cache_savings(conn: duckdb.DuckDBPyConnection, where: str, params: list[Any]) -> tuple[int, float]:
    """Requests answered from the response cache and what they would have cost (``request_spans``
    of schema 4 or later; an older file has no such column and reports none)."""
    columns = conn.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = 'request_spans' "
        "AND schema_name = current_schema() AND column_name = 'cache_saved_usd'"
    ).fetchall()
    if not columns:
        return 0, 0.0
    hit = f"{where} {'AND' if where else 'WHERE'} cache_hit"
    row = conn.execute(f"SELECT count(*), sum(cache_saved_usd) FROM request_spans {hit}", params).fetchall()[0]
    return int(row[0] or 0), float(row[1] or 0.0)


# ---------------------------------------------------------------- renderers


def _usd(value: float | None) -> str:
    return "-" if value is None else f"${value:,.4f}"


def to_table(report: SpendReport) -> Table:
    """The grouped spend as a rich Table; totals and the saving estimate in its caption."""
    table = Table(
        title=f"Image spend by {report.by}"
        + (f" since {report.since:%Y-%m-%d %H:%M}" if report.since else "")
    )
    for name, justify in (
        (report.by, "left"),
        ("spend", "right"),
        ("share", "right"),
        ("images", "right"),
        ("tokens est.", "right"),
        ("tokens billed", "right"),
        ("detail not needed", "right"),
        ("saveable", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for g in report.groups:
        share = g.spend_usd / report.spend_usd if report.spend_usd else 0.0
        table.add_row(
            g.key,
            _usd(g.spend_usd),
            f"{share:.1%}",
            f"{g.images:,}",
            f"{g.tokens_estimated:,}",
            f"{g.tokens_billed:,}",
            f"{g.unneeded_detail_images:,}",
            _usd(g.savings_usd),
        )
    u = report.unneeded_detail
    table.caption = (
        f"total {_usd(report.spend_usd)} over {report.images:,} images · "
        f"detail not needed: {u.images:,} images ({u.large_text:,} with text ≥ "
        f"{report.text_height_threshold_px:g}px, {u.small_image:,} ≤ {report.small_long_side_px}px), "
        f"{_usd(u.savings_usd)} saveable at low detail"
        + (f" · response cache: {report.cache_hits:,} hits saved {_usd(report.cache_saved_usd)}"
           if report.cache_hits else "")
    )
    return table


def to_tables(report: SpendReport) -> list[Table]:
    """All sections: grouped spend, costliest images, detail-not-needed examples."""
    tables = [to_table(report)]
    for title, images, extra in (
        ("Costliest images", report.top_images, False),
        ("Detail that was not needed (largest savings)", report.unneeded_detail.examples, True),
    ):
        t = Table(title=title)
        for name in ("span", "model", "team", "detail", "size", "tokens", "cost") + (
            ("saving",) if extra else ()
        ):
            t.add_column(name)
        for i in images:
            size = f"{i.width}x{i.height}" if i.width and i.height else "-"
            row = [
                i.span_id,
                i.model or "-",
                i.team or "-",
                i.detail or "-",
                size,
                "-" if i.tokens_billed is None else f"{i.tokens_billed:,}",
                _usd(i.cost_usd),
            ]
            t.add_row(*row, *([_usd(i.savings_usd)] if extra else []))
        tables.append(t)
    return tables


def to_csv(report: SpendReport) -> str:
    """The grouped spend as CSV (one row per group)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            report.by,
            "spend_usd",
            "images",
            "tokens_estimated",
            "tokens_billed",
            "unneeded_detail_images",
            "savings_usd",
        ]
    )
    for g in report.groups:
        writer.writerow(
            [
                g.key,
                f"{g.spend_usd:.6f}",
                g.images,
                g.tokens_estimated,
                g.tokens_billed,
                g.unneeded_detail_images,
                f"{g.savings_usd:.6f}",
            ]
        )
    return out.getvalue()


def to_json(report: SpendReport) -> str:
    """The whole report as JSON (datetimes in ISO 8601, UTC)."""
    return json.dumps(asdict(report), default=lambda v: v.isoformat(), indent=2)
