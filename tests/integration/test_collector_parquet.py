"""Parquet export from a real store file."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from collector.parquet import export_parquet
from collector.schema import TABLES
from collector.store import StoreNotFoundError, insert_rows, open_store


def test_export_all_tables_with_since(tmp_path: Path) -> None:
    db = tmp_path / "store.duckdb"
    with open_store(db) as conn:
        insert_rows(
            conn,
            "image_spans",
            [
                {
                    "trace_id": "t",
                    "span_id": f"s{d}",
                    "ts": datetime(2025, 1, d),
                    "cost_usd": d / 100,
                }
                for d in range(1, 11)
            ],
        )
        insert_rows(
            conn, "rollouts", [{"ts": datetime(2025, 1, 9), "rollout_id": "r", "decision": "start"}]
        )
    out = tmp_path / "it's here"  # a quote in the path must not break the COPY statement
    paths = export_parquet(db, out, since="2025-01-06")
    assert set(paths) == set(TABLES)
    images = pl.read_parquet(paths["image_spans"])
    assert images.height == 5 and images["cost_usd"].sum() == pytest.approx(0.40)
    assert images.schema["ts"] == pl.Datetime("us")
    assert pl.read_parquet(paths["rollouts"]).height == 1
    assert pl.read_parquet(paths["eval_scores"]).height == 0
    everything = export_parquet(db, out, tables=("image_spans",))
    assert pl.read_parquet(everything["image_spans"]).height == 10
    assert not list(out.glob(".*partial"))


def test_export_refusals(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError):
        export_parquet(tmp_path / "missing.duckdb", tmp_path / "out")
    with open_store(tmp_path / "s.duckdb"):
        pass
    with pytest.raises(ValueError, match="unknown table"):
        export_parquet(tmp_path / "s.duckdb", tmp_path / "out", tables=("secrets",))
