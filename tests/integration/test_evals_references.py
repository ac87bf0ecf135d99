"""Loading ground truth files into the store, and refusing broken ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collector.store import fetch_df, open_store
from emulator.workload import generate_item
from evals.references import ReferenceFileError, load_reference_file


def test_workload_ground_truth_loads_and_reloads(tmp_path: Path) -> None:
    recs = [generate_item("receipt", 3, i, long_side=600).record for i in range(2)]
    path = tmp_path / "ground_truth.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + "\n")
    db = tmp_path / "a.duckdb"
    assert load_reference_file(db, path) == 2
    assert load_reference_file(db, path) == 2
    with open_store(db, read_only=True) as conn:
        df = fetch_df(
            conn, 'SELECT reference_id, text, lines, image_sha256 FROM "references" ORDER BY 1'
        )
    assert df["reference_id"].to_list() == [recs[0]["id"], recs[1]["id"]]
    assert df["text"][0] == recs[0]["text"] and json.loads(df["lines"][0]) == recs[0]["lines"]
    assert df["image_sha256"][0] == recs[0]["sha256"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"id": "a", "text": "x"}\n{oops\n', ":2: invalid JSON"),
        (b'["a"]\n', ":1: expected a JSON object"),
        (b'{"text": "x"}\n', ":1: record without an 'id'"),
        (b'{"id": "a"}\n', "has no text, lines, fields or qa"),
        (b'{"id": "a", "text": "caf\xe9"}\n', "not UTF-8"),
    ],
)
def test_broken_files_are_refused_before_anything_is_written(
    tmp_path: Path, body: bytes, message: str
) -> None:
    path = tmp_path / "gt.jsonl"
    path.write_bytes(body)
    with pytest.raises(ReferenceFileError, match=message):
        load_reference_file(tmp_path / "a.duckdb", path)
    assert not (tmp_path / "a.duckdb").exists()
