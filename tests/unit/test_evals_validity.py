"""Validity on the workload generator's ground truth: scores track real error rates.

Answers are simulated from the true text at known corruption levels; the evaluator never
sees the level. Grounding must find injected wrong numbers and invented names.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from scipy.stats import spearmanr

from emulator.workload import generate_item
from evals.base import EvalCase, NotEvaluable, Reference
from evals.claims import extract_claims
from evals.grounding import Grounding
from evals.ocr_faithfulness import OcrFaithfulness

KINDS = ["invoice", "receipt", "form", "slide", "ui_screenshot", "sign_photo", "table"]
LEVELS = [0.0, 0.02, 0.05, 0.1, 0.2, 0.35]
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
INVENTED = [
    "Marguerite Okonkwo",
    "Tobias Lindqvist",
    "Priya Ramaswamy",
    "Eduardo Falcone",
    "Hannelore Brandt",
]


@pytest.fixture(scope="module")
def records() -> list[dict]:
    out = []
    for i, kind in enumerate(KINDS):
        spec_long = {"sign_photo": 300, "slide": 500}.get(kind, 800)
        out.append(generate_item(kind, 11, i, long_side=spec_long).record)
    return out


def corrupt(text: str, rate: float, rng: random.Random) -> tuple[str, int]:
    """Drop / substitute / insert non-space characters at ``rate``; returns (text, edits)."""
    out, edits = [], 0
    for ch in text:
        if ch.isspace() or rng.random() >= rate:
            out.append(ch)
            continue
        edits += 1
        op = rng.choice("dsi")
        if op == "s":
            out.append(rng.choice([c for c in ALPHABET if c.lower() != ch.lower()]))
        elif op == "i":
            out.extend([ch, rng.choice(ALPHABET)])
    return "".join(out), edits


def as_case(rec: dict, answer: str, task: str = "transcribe") -> EvalCase:
    ref = Reference(
        rec["id"],
        text=rec["text"],
        lines=rec["lines"],
        fields=rec["fields"],
        qa=rec["qa"],
        task=task,
    )
    return EvalCase(
        "a" * 32, "b" * 16, task=task, answer=answer, reference_id=rec["id"], reference=ref
    )


def test_ocr_score_rank_correlates_with_true_error_rate(
    records: list[dict], tmp_path: Path
) -> None:
    rng = random.Random(5)
    ev = OcrFaithfulness(cache_dir=tmp_path)
    scores, true_cer = [], []
    for rec in records:
        for level in LEVELS:
            answer, edits = corrupt(rec["text"], level, rng)
            [s] = ev.evaluate(as_case(rec, answer))
            scores.append(s.value)
            true_cer.append(edits / len(rec["text"]))
    assert len(scores) >= 30
    rho = spearmanr(scores, true_cer).statistic
    assert rho <= -0.9, rho  # higher score = fewer true errors


def inject(rec: dict, rng: random.Random) -> tuple[str, list[tuple[int, int]]]:
    """A correct answer (the true lines, reflowed) with one wrong number and one invented name."""
    lines = list(rec["lines"])
    answer = " ".join(lines)
    spans: list[tuple[int, int]] = []
    numbers = [
        m for m in re.finditer(r"(?<![\w.,])\d[\d,]*\.\d\d|(?<![\w.,-])\d{3,}(?![\w-])", answer)
    ]
    if numbers:
        m = rng.choice(numbers)
        digits = [i for i, c in enumerate(m.group(0)) if c.isdigit()]
        pos = rng.choice(digits)
        old = m.group(0)
        new = old[:pos] + str((int(old[pos]) + rng.randint(1, 8)) % 10) + old[pos + 1 :]
        answer = answer[: m.start()] + new + answer[m.end() :]
        spans.append((m.start(), m.start() + len(new)))
    name = rng.choice(INVENTED)
    insert_at = len(answer)
    answer = f"{answer}. Approved by {name}."
    start = answer.index(name, insert_at)
    spans.append((start, start + len(name)))
    return answer, spans


def test_grounding_finds_injected_errors_with_precision_and_recall(
    records: list[dict], tmp_path: Path
) -> None:
    rng = random.Random(9)
    ev = Grounding(cache_dir=tmp_path)
    tp = fp = fn = 0
    for _round in range(3):
        for rec in records:
            answer, spans = inject(rec, rng)
            [s] = ev.evaluate(as_case(rec, answer, task="describe"))
            flagged = {u["text"] for u in s.details["unsupported"]}
            claims = extract_claims(answer)
            for c in claims:
                injected = any(c.start < e and b < c.end for b, e in spans)
                hit = c.text in flagged
                tp += injected and hit
                fp += (not injected) and hit
                fn += injected and not hit
    precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    assert tp >= 20
    assert precision >= 0.9 and recall >= 0.9, (precision, recall, tp, fp, fn)


def test_faithful_emulator_style_answers_are_fully_grounded(
    records: list[dict], tmp_path: Path
) -> None:
    """Answers built by the emulator's answerer from perfectly read lines invent nothing, so
    grounding must support every claim (no false alarms on real answer phrasing)."""
    from emulator.answers import answer
    from emulator.ocr import OcrLine

    ev = Grounding(cache_dir=tmp_path)
    scored = 0
    for rec in records:
        lines = [
            OcrLine(t, (0.0, 20.0 * i, 100.0, 20.0 * i + 10), 0.99)
            for i, t in enumerate(rec["lines"])
        ]
        for task, prompt in (
            ("describe", "Describe this image briefly."),
            ("extract", rec["prompt"]),
        ):
            text = answer(task, prompt, lines)
            try:
                [s] = ev.evaluate(as_case(rec, text, task=task))
            except NotEvaluable:
                continue
            scored += 1
            assert s.value == 1.0, (task, text, s.explanation)
    assert scored >= len(records)
