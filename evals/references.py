"""Load ground truth (the workload generator's ``ground_truth.jsonl``) into ``references``.

    >>> load_reference_file("aperture.duckdb", Path("workload/ground_truth.jsonl"))  # doctest: +SKIP
    120

Requests that carried ``x-aperture-reference-id: <id>`` are then scored against the record
with that id instead of reference OCR. Reloading a file replaces rows with the same id.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from collector.store import load_references, open_store


class ReferenceFileError(ValueError):
    """The file is not JSONL of objects with an ``id``; the message names the line."""


def read_reference_file(path: Path) -> list[dict[str, Any]]:
    """Parse and validate a JSONL reference file (blank lines are skipped)."""
    records: list[dict[str, Any]] = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ReferenceFileError(f"{path}: not UTF-8 ({exc.reason})") from exc
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise ReferenceFileError(f"{path}:{n}: invalid JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise ReferenceFileError(f"{path}:{n}: expected a JSON object")
        if record.get("id") in (None, ""):
            raise ReferenceFileError(f"{path}:{n}: record without an 'id'")
        if not any(record.get(k) for k in ("text", "lines", "fields", "qa")):
            raise ReferenceFileError(
                f"{path}:{n}: record {record['id']!r} has no text, lines, fields or qa"
            )
        records.append(record)
    return records


def load_reference_file(db_path: str | Path, path: Path) -> int:
    """Validate ``path`` completely, then upsert its records; returns how many were loaded."""
    records = read_reference_file(path)
    with open_store(db_path) as conn:
        return load_references(conn, records)
