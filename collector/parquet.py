"""Export the store's tables to Parquet, for notebooks, warehouses and other engines.

Example::

    export_parquet("aperture.duckdb", "export/", since="7d")
    # export/image_spans.parquet, export/request_spans.parquet, ...
"""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta
from pathlib import Path

from collector.schema import TABLES, TIME_COLUMNS
from collector.spend import parse_since
from collector.store import open_store


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def export_parquet(
    db: str | Path,
    out_dir: str | Path,
    since: str | datetime | date | timedelta | None = None,
    *,
    tables: tuple[str, ...] = TABLES,
) -> dict[str, Path]:
    """Write one ``<table>.parquet`` per table (rows at or after ``since``); return the paths.

    Each file is written beside its final name and renamed into place, so a
    reader never sees a half-written file.
    """
    unknown = [t for t in tables if t not in TIME_COLUMNS]
    if unknown:
        raise ValueError(f"unknown table(s): {', '.join(unknown)}")
    start = parse_since(since)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    with open_store(db, read_only=True) as conn:
        for table in tables:
            query = f'SELECT * FROM "{table}"'
            if start is not None:
                query += f' WHERE "{TIME_COLUMNS[table]}" >= TIMESTAMP {_literal(start.isoformat(sep=" "))}'
            target = out / f"{table}.parquet"
            partial = out / f".{table}.parquet.partial"
            conn.execute(f"COPY ({query}) TO {_literal(str(partial))} (FORMAT PARQUET)").fetchall()
            os.replace(partial, target)
            written[table] = target
    return written
