"""Build :class:`EvalCase` objects from the store: the runner's read side.

Selection is an anti-join: a request span is pending for an evaluator when
``eval_scores`` has no row for (span_id, evaluator, evaluator_version), so bumping an
evaluator's version re-scores everything and re-runs are free.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from collector.blobs import read_blob
from collector.queries.evals import pending_requests, request_images
from evals.base import EvalCase, Evaluator, ImageInfo, Reference


@dataclass(frozen=True)
class BlobLoader:
    """Picklable loader of one content-addressed blob ``<root>/<sha[:2]>/<sha>``."""

    root: Path
    sha256: str

    def __call__(self) -> bytes | None:
        # A stored value that is not a digest reads as missing: it never leaves the blob root.
        return read_blob(self.root, self.sha256)


@dataclass(frozen=True)
class PendingCase:
    case: EvalCase
    evaluators: tuple[str, ...]


def _json(value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _texts(node: Any) -> list[str]:
    """Text parts of chat messages in either OTel GenAI (parts/content) or OpenAI shape."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [t for x in node for t in _texts(x)]
    if not isinstance(node, dict):
        return []
    kind = node.get("type")
    if kind in ("text", "input_text"):
        val = node.get("content", node.get("text"))
        return [val] if isinstance(val, str) else []
    if kind is not None:
        return []  # image parts and the like
    return _texts(node.get("parts")) + _texts(node.get("content"))


def prompt_text(input_text: str | None) -> str | None:
    """The user's words from a captured ``gen_ai.input.messages`` JSON string."""
    if not input_text:
        return None
    data = _json(input_text)
    if isinstance(data, str):
        return data
    messages = data if isinstance(data, list) else [data]
    users = [m for m in messages if isinstance(m, dict) and m.get("role") in ("user", None)]
    text = "\n".join(t for m in users for t in _texts(m)).strip()
    return text or None


def naive_utc(ts: datetime) -> datetime:
    """Store timestamps are naive UTC; an aware bound is converted, a naive one taken as UTC."""
    return ts.astimezone(UTC).replace(tzinfo=None) if ts.tzinfo is not None else ts


def select_pending(
    conn: duckdb.DuckDBPyConnection,
    evaluators: Sequence[Evaluator],
    *,
    since: datetime | None = None,
    limit: int | None = None,
    blob_dir: Path | None = None,
) -> list[PendingCase]:
    """Request spans that some of ``evaluators`` have not scored yet, as cases."""
    if not evaluators:
        return []
    since_utc = naive_utc(since) if since is not None else None
    rows = pending_requests(conn, [(e.name, e.version) for e in evaluators],
                            since=since_utc, limit=None if limit is None else int(limit))
    images = _images(conn, [(r[1], r[2]) for r in rows], blob_dir)
    return [_pending(row, images.get((row[1], row[2]), ())) for row in rows]


def _reference(row: Sequence[Any]) -> Reference | None:
    """The joined reference columns of a pending row (``r_id`` … ``r_sha``), if it has one."""
    r_id, r_kind, r_task, r_text, r_lines, r_fields, r_qa, r_sha = row
    if r_id is None:
        return None
    lines = _json(r_lines)
    return Reference(
        reference_id=r_id,
        text=r_text,
        lines=lines if isinstance(lines, list) else None,
        fields=_json(r_fields),
        qa=_json(r_qa),
        kind=r_kind,
        task=r_task,
        image_sha256=r_sha,
    )


def _pending(row: Sequence[Any], imgs: tuple[tuple[ImageInfo, str | None], ...]) -> PendingCase:
    """One ``pending_requests`` row and its images as a case; the task falls back to the
    images' task, then the reference's."""
    (evs, trace_id, span_id, task, model, route, status, error_type, ref_id, input_text,
     output_text) = row[:11]
    reference = _reference(row[11:])
    case = EvalCase(
        trace_id=trace_id,
        span_id=span_id,
        task=task or next((t for t in (i[1] for i in imgs) if t), None) or row[13],
        prompt=prompt_text(input_text),
        answer=output_text,
        reference_id=ref_id,
        reference=reference,
        images=tuple(i[0] for i in imgs),
        model=model,
        route=route,
        status=status,
        error_type=error_type,
    )
    return PendingCase(case, tuple(evs))


def _images(
    conn: duckdb.DuckDBPyConnection, keys: list[tuple[str, str]], blob_dir: Path | None
) -> dict[tuple[str, str], tuple[tuple[ImageInfo, str | None], ...]]:
    if not keys:
        return {}
    rows = request_images(conn, keys)
    grouped: dict[tuple[str, str], list[tuple[ImageInfo, str | None]]] = {}
    for trace_id, parent, sha, w, h, fmt, detail, model, th, task in rows:
        loader = BlobLoader(Path(blob_dir), sha) if blob_dir is not None and sha else None
        info = ImageInfo(sha, w, h, fmt, detail, model, th, loader)
        grouped.setdefault((trace_id, parent), []).append((info, task))
    return {k: tuple(v) for k, v in grouped.items()}
