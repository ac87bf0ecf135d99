"""The runner over a real DuckDB file: selection, idempotence, workers, OTel events, OCR."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from PIL import Image, ImageDraw, ImageFont

from collector.store import fetch_df, insert_rows, load_references, open_store
from evals.base import EvalCase, Score, evaluator
from evals.registry import unregister
from evals.runner import run_evals

T0 = datetime(2026, 1, 1)
TEXT = "Invoice INV-2024-0042\nTotal $1,234.56\nAlice Smith"


def png(text: str) -> bytes:
    img = Image.new("RGB", (420, 110), "white")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(text.splitlines()):
        draw.text((8, 6 + 34 * i), line, fill="black", font=ImageFont.load_default(size=22))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def put_blob(root: Path, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    (root / sha[:2]).mkdir(parents=True, exist_ok=True)
    (root / sha[:2] / sha).write_bytes(data)
    return sha


def add_request(
    rows: dict[str, list],
    i: int,
    *,
    answer: str | None,
    task: str = "transcribe",
    ref: str | None = None,
    sha: str | None = "0" * 64,
    status: str = "ok",
) -> None:
    trace, span = f"{i + 1:032x}", f"{i + 1:016x}"
    ts = T0 + timedelta(minutes=i)
    rows["request_spans"].append(
        {
            "trace_id": trace,
            "span_id": span,
            "ts": ts,
            "model": "gpt-4o-mini",
            "route": "gpt-4o-mini:high",
            "task": task,
            "status": status,
            "reference_id": ref,
            "output_text": answer,
            "error_type": "upstream_5xx" if status == "error" else None,
            "input_text": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": "What is the total?"}]}]
            ),
        }
    )
    if sha is not None:
        rows["image_spans"].append(
            {
                "trace_id": trace,
                "span_id": f"{i + 500:016x}",
                "request_span_id": span,
                "ts": ts,
                "image_index": 0,
                "sha256": sha,
                "width": 420,
                "height": 110,
                "format": "png",
                "detail": "high",
                "model": "gpt-4o-mini",
                "cost_usd": 0.001,
            }
        )


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("APERTURE_CACHE_DIR", str(tmp_path / "cache"))
    db, blobs = tmp_path / "a.duckdb", tmp_path / "blobs"
    sha = put_blob(blobs, png(TEXT))
    rows: dict[str, list] = {"request_spans": [], "image_spans": []}
    add_request(rows, 0, answer=TEXT, ref="doc-1")  # reference mode, perfect
    add_request(rows, 1, answer="Invoice INV-2024-0042 Total $9,234.56 Bob Marley", ref="doc-1")
    add_request(rows, 2, answer="$1,234.56", task="extract", ref="doc-1")
    add_request(rows, 3, answer=None, ref="doc-1")  # content capture off
    add_request(rows, 4, answer="anything", status="error")
    add_request(rows, 5, answer=TEXT, sha="f" * 64)  # reference-free, blob missing
    for i in range(6, 12):  # reference-free, blob present: one OCR call thanks to the cache
        add_request(rows, i, answer=TEXT if i % 2 else "Invoice 1NV-2024-0042 Total", sha=sha)
    with open_store(db) as conn:
        for table, r in rows.items():
            insert_rows(conn, table, r)
        load_references(
            conn,
            [
                {
                    "id": "doc-1",
                    "task": "transcribe",
                    "text": TEXT,
                    "lines": TEXT.splitlines(),
                    "fields": {"total": "$1,234.56"},
                    "qa": [
                        {"question": "What is the total?", "answer": "$1,234.56", "field": "total"}
                    ],
                }
            ],
        )
    return db, blobs


def scores(db: Path) -> dict[tuple[str, str], tuple]:
    with open_store(db, read_only=True) as conn:
        df = fetch_df(
            conn, "SELECT span_id, evaluator, status, score, passed, explanation FROM eval_scores"
        )
    return {
        (r["span_id"], r["evaluator"]): (r["status"], r["score"], r["passed"], r["explanation"])
        for r in df.iter_rows(named=True)
    }


@pytest.mark.slow  # runs the OCR model for the reference-free cases
def test_run_scores_everything_once_and_is_idempotent(store: tuple[Path, Path]) -> None:
    db, blobs = store
    first = run_evals(db, blob_dir=blobs, workers=2, chunk_size=2, progress=False)
    assert first.cases == 12 and first.written == 36
    got = scores(db)
    assert len(got) == 36
    assert got[(f"{1:016x}", "ocr_faithfulness")][:3] == ("scored", 1.0, True)
    assert got[(f"{2:016x}", "grounding")][2] is False
    assert "'Bob Marley'" in got[(f"{2:016x}", "grounding")][3]
    assert got[(f"{3:016x}", "field_accuracy")][:3] == ("scored", 1.0, True)
    assert got[(f"{4:016x}", "ocr_faithfulness")][0] == "not_evaluable"
    assert "no answer captured" in got[(f"{4:016x}", "ocr_faithfulness")][3]
    assert "request failed (upstream_5xx)" in got[(f"{5:016x}", "grounding")][3]
    assert "bytes not stored" in got[(f"{6:016x}", "ocr_faithfulness")][3]
    free_ok, free_bad = (
        got[(f"{8:016x}", "ocr_faithfulness")],
        got[(f"{7:016x}", "ocr_faithfulness")],
    )
    assert free_ok[0] == free_bad[0] == "scored"
    assert free_ok[1] > 0.9 and free_bad[1] < free_ok[1]
    assert "reference ocr" in free_ok[3]
    assert {r["evaluator"]: r["failed"] for r in first.rows()}["grounding"] >= 1

    again = run_evals(db, blob_dir=blobs, workers=2, progress=False)
    assert (again.cases, again.written) == (0, 0)
    assert scores(db) == got


def test_since_limits_the_window_and_new_versions_rescore(store: tuple[Path, Path]) -> None:
    db, blobs = store
    s = run_evals(
        db,
        since=T0 + timedelta(minutes=10),
        evaluators=["field_accuracy"],
        workers=1,
        progress=False,
    )
    assert (s.cases, s.written) == (2, 2)

    @evaluator("field_accuracy_probe", "1", register=False)
    def probe(case: EvalCase) -> Score:
        return Score.scored("field_accuracy_probe", "1", 1.0, True, case.prompt or "-")

    r = run_evals(db, evaluators=[probe], workers=1, progress=False, limit=3)
    assert r.written == 3
    assert scores(db)[(f"{1:016x}", "field_accuracy_probe")][3] == "What is the total?"


def test_decorated_evaluators_run_in_worker_processes(store: tuple[Path, Path]) -> None:
    db, _ = store

    @evaluator("pid_probe", "1")
    def pid_probe(case: EvalCase) -> Score:
        import os

        return Score.scored("pid_probe", "1", 1.0, True, str(os.getpid()))

    try:
        run_evals(db, evaluators=["pid_probe"], workers=2, chunk_size=2, progress=False)
    finally:
        unregister("pid_probe")
    import os

    pids = {v[3] for k, v in scores(db).items() if k[1] == "pid_probe"}
    assert len(pids) >= 1 and str(os.getpid()) not in pids


def test_scores_are_emitted_as_linked_otel_events(store: tuple[Path, Path]) -> None:
    db, _ = store
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    s = run_evals(
        db, evaluators=["field_accuracy"], workers=1, progress=False, tracer_provider=provider
    )
    spans = exporter.get_finished_spans()
    assert s.emitted == len(spans) == 12
    by_link = {f"{sp.links[0].context.span_id:016x}": sp for sp in spans}
    judged = by_link[f"{3:016x}"]
    assert judged.name == "evaluation field_accuracy"
    assert judged.links[0].context.trace_id == 3
    [event] = judged.events
    assert event.name == "gen_ai.evaluation.result"
    assert event.attributes["gen_ai.evaluation.name"] == "field_accuracy"
    assert event.attributes["gen_ai.evaluation.score.value"] == 1.0
    assert event.attributes["gen_ai.evaluation.score.label"] == "pass"
    assert "total" in event.attributes["gen_ai.evaluation.explanation"]
    declined = by_link[f"{1:016x}"].events[0].attributes
    assert declined["gen_ai.evaluation.score.label"] == "not_evaluable"
    assert "gen_ai.evaluation.score.value" not in declined
    assert judged.context.trace_id != 3  # its own trace, linked, not a child


def test_missing_store_and_unknown_evaluator_are_refused(tmp_path: Path) -> None:
    from collector.store import StoreNotFoundError

    with pytest.raises(StoreNotFoundError):
        run_evals(tmp_path / "none.duckdb", progress=False)
    with pytest.raises(KeyError, match="unknown evaluator"):
        run_evals(tmp_path / "none.duckdb", evaluators=["nope"], progress=False)


def test_retryable_scores_are_left_for_the_next_run(store: tuple[Path, Path]) -> None:
    db, _ = store
    calls: list[str] = []

    @evaluator("flaky_probe", "1", register=False)
    def flaky(case: EvalCase) -> Score:
        calls.append(case.span_id)
        if len(calls) <= 12:
            return Score.not_evaluable("flaky_probe", "1", "judge unavailable", {"retryable": True})
        return Score.scored("flaky_probe", "1", 0.5, False, "judged")

    first = run_evals(db, evaluators=[flaky], workers=1, progress=False)
    assert (first.retry_later, first.written) == (12, 0)
    second = run_evals(db, evaluators=[flaky], workers=1, progress=False)
    assert (second.cases, second.written, second.retry_later) == (12, 12, 0)
