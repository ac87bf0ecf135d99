"""Spend report over ``image_spans``: where the money went, and detail that was not needed.

Grouped by model, team, day, detail or size bucket (long side ≤512, ≤1024,
≤2048, >2048), with the costliest images and an estimate of what lower detail
would have saved. An image sent at ``high``/``auto`` detail did not need it when
its text is large (``text_height_px`` ≥ threshold: large text reads fine at low
detail) or the image is small (long side ≤ 512); the saving is
``(tokens_billed − tokens_low_estimate) × cost per token`` of that row. The queries (and
the exact rules: missing keys, ties, case, missing sizes) are ``collector.queries.spend``,
shared with the notebooks' ``collector.analysis``; this module builds and renders the report.

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
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any

import duckdb
from rich.table import Table

from collector.queries.spend import (
    GROUPINGS,
    SAVINGS_SQL,
    SIZE_BUCKET,
    DetailRule,
    Query,
    cache_savings,
    costliest_images,
    group_totals,
    image_source,
    unneeded_detail_images,
)

__all__ = [
    "GROUPINGS",
    "SAVINGS_SQL",
    "SIZE_BUCKET",
    "CostlyImage",
    "SpendGroup",
    "SpendReport",
    "UnneededDetail",
    "parse_since",
    "spend_report",
    "to_csv",
    "to_json",
    "to_table",
    "to_tables",
]

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


def _image(row: tuple[Any, ...], columns: list[str]) -> CostlyImage:
    values: dict[str, Any] = dict(zip(columns, row, strict=True))
    kwargs: dict[str, Any] = {f.name: values.get(f.name) for f in fields(CostlyImage)}
    return CostlyImage(**kwargs)


def _images(conn: duckdb.DuckDBPyConnection, query: Query) -> list[CostlyImage]:
    cursor = conn.execute(*query)
    columns = [d[0] for d in cursor.description or ()]
    return [_image(row, columns) for row in cursor.fetchall()]


def spend_report(
    conn: duckdb.DuckDBPyConnection,
    by: str = "model",
    since: str | datetime | date | timedelta | None = None,
    top: int = 10,
    *,
    text_height_px: float = 20.0,
    small_long_side_px: int = 512,
) -> SpendReport:
    """Aggregate ``image_spans`` (see module docstring; the rules are ``collector.queries.spend``'s).

    One grouped scan gives spend and the detail-not-needed totals per group;
    two top-N queries give the costliest images and the largest savings.
    """
    if top < 0:
        raise ValueError("top must be >= 0")
    start = parse_since(since)
    rule = DetailRule(text_height_px, small_long_side_px)
    groups = group_totals(conn, by, start, rule)
    source = image_source(conn)
    top_images = _images(conn, costliest_images(start, top, source)) if top else []
    n_unneeded = sum(g.unneeded_detail_images for g in groups)
    examples = (
        _images(conn, unneeded_detail_images(start, rule, top, source)) if n_unneeded and top else []
    )
    cache_hits, cache_saved = cache_savings(conn, start)
    return SpendReport(
        by=by,
        since=start,
        spend_usd=sum(g.spend_usd for g in groups),
        images=sum(g.images for g in groups),
        tokens_estimated=sum(g.tokens_estimated for g in groups),
        tokens_billed=sum(g.tokens_billed for g in groups),
        groups=[
            SpendGroup(g.key, g.spend_usd, g.images, g.tokens_estimated, g.tokens_billed,
                       g.unneeded_detail_images, g.savings_usd)
            for g in groups
        ],
        top_images=top_images,
        unneeded_detail=UnneededDetail(
            images=n_unneeded,
            savings_usd=sum(g.savings_usd for g in groups),
            large_text=sum(g.large_text for g in groups),
            small_image=sum(g.small_image for g in groups),
            examples=examples,
        ),
        text_height_threshold_px=text_height_px,
        small_long_side_px=small_long_side_px,
        cache_hits=cache_hits,
        cache_saved_usd=cache_saved,
    )


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
