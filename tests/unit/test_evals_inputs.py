"""Inputs from the store: prompt parsing, blob paths, time bounds, and arbitrary answers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from evals.base import EvalCase, NotEvaluable, Reference
from evals.cases import BlobLoader, naive_utc, prompt_text
from evals.field_accuracy import FieldAccuracy, match_value
from evals.grounding import Grounding
from evals.ocr_faithfulness import OcrFaithfulness


def test_prompt_from_otel_and_openai_message_shapes() -> None:
    otel = [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": "What is the total?"},
                {"type": "uri", "uri": "x"},
            ],
        },
    ]
    openai = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Transcribe."},
                {"type": "image_url", "image_url": {"url": "data:..."}},
            ],
        }
    ]
    assert prompt_text(json.dumps(otel)) == "What is the total?"
    assert prompt_text(json.dumps(openai)) == "Transcribe."
    assert prompt_text(json.dumps([{"role": "user", "content": "plain"}])) == "plain"
    assert prompt_text("not json at all") == "not json at all"
    assert (
        prompt_text(None) is None
        and prompt_text(json.dumps([{"role": "user", "content": []}])) is None
    )


def test_blob_loader_reads_content_addressed_files_only(tmp_path: Path) -> None:
    sha = "ab" * 32
    (tmp_path / "ab").mkdir()
    (tmp_path / "ab" / sha).write_bytes(b"img")
    (tmp_path / "secret").write_bytes(b"no")
    assert BlobLoader(tmp_path, sha)() == b"img"
    assert BlobLoader(tmp_path, "cd" * 32)() is None  # missing
    assert BlobLoader(tmp_path, "../secret")() is None
    assert BlobLoader(tmp_path, "AB" * 32)() is None


def test_naive_utc() -> None:
    aware = datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    assert naive_utc(aware) == datetime(2026, 1, 1, 10)
    assert naive_utc(datetime(2026, 1, 1)) == datetime(2026, 1, 1)
    assert naive_utc(datetime(2026, 1, 1, tzinfo=UTC)).tzinfo is None


REF = Reference(
    "r",
    text="Invoice INV-2024-0311\nTotal: $1,234.50\nBrightline Systems",
    fields={"total": "$1,234.50"},
    qa=[{"question": "What is the total?", "answer": "$1,234.50"}],
)


@settings(max_examples=150, deadline=None)
@given(answer=st.text(), task=st.sampled_from(["transcribe", "extract", "describe", None]))
def test_evaluators_only_ever_decline_with_not_evaluable(answer: str, task: str | None) -> None:
    case = EvalCase(
        "a" * 32, "b" * 16, task=task, prompt="What is the total?", answer=answer, reference=REF
    )
    for ev in (
        OcrFaithfulness(cache_dir=Path("/nonexistent-cache")),
        FieldAccuracy(),
        Grounding(cache_dir=Path("/nonexistent-cache")),
    ):
        try:
            scores = ev.evaluate(case)
        except NotEvaluable:
            continue
        for s in scores:
            assert s.status == "scored" and 0.0 <= (s.value or 0.0) <= 1.0


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=40), st.text(max_size=200))
def test_match_value_is_bounded(expected: str, answer: str) -> None:
    sim, how = match_value(expected, answer)
    assert 0.0 <= sim <= 1.0 and how
