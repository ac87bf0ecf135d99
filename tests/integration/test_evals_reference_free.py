"""Reference-free validity: with reference OCR as the only evidence, scores still rank
simulated answers by their true error rate (workload images, real OCR model)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from scipy.stats import spearmanr

from emulator.workload import generate_item
from evals.base import EvalCase, ImageInfo
from evals.grounding import Grounding
from evals.ocr_faithfulness import OcrFaithfulness

ITEMS = [("sign_photo", 300), ("slide", 640), ("receipt", 600), ("ui_screenshot", 700)]
LEVELS = [0.0, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.45]


def corrupt(text: str, rate: float, rng: random.Random) -> tuple[str, int]:
    out, edits = [], 0
    for ch in text:
        if ch.isspace() or rng.random() >= rate:
            out.append(ch)
            continue
        edits += 1
        op = rng.choice("dsi")
        if op == "s":
            out.append(rng.choice("qxzjkvw"))
        elif op == "i":
            out.extend([ch, rng.choice("qxzjkvw")])
    return "".join(out), edits


@pytest.mark.slow
def test_reference_free_scores_rank_true_errors(tmp_path: Path) -> None:
    items = [
        generate_item(kind, 21, i, long_side=side, format="png")
        for i, (kind, side) in enumerate(ITEMS)
    ]
    ocr_eval = OcrFaithfulness(cache_dir=tmp_path)
    rng = random.Random(2)
    scores, truth = [], []
    for item in items:
        image = ImageInfo(sha256=item.record["sha256"], loader=lambda d=item.data: d)
        for level in LEVELS:
            answer, edits = corrupt(item.record["text"], level, rng)
            case = EvalCase("a" * 32, "b" * 16, task="transcribe", answer=answer, images=(image,))
            [s] = ocr_eval.evaluate(case)
            assert s.details["evidence"] == "reference_ocr"
            scores.append(s.value)
            truth.append(edits / len(item.record["text"]))
    rho = spearmanr(scores, truth).statistic
    assert rho <= -0.9, (rho, list(zip(scores, truth, strict=True)))

    # Grounding in reference-free mode: the true text is supported, an invented total is not.
    ground = Grounding(cache_dir=tmp_path)
    receipt = items[2]
    image = ImageInfo(sha256=receipt.record["sha256"], loader=lambda: receipt.data)
    [ok] = ground.evaluate(
        EvalCase(
            "a" * 32, "b" * 16, task="describe", answer=receipt.record["lines"][0], images=(image,)
        )
    )
    [bad] = ground.evaluate(
        EvalCase(
            "a" * 32,
            "b" * 16,
            task="describe",
            answer="Paid $98,765.43 to Quentin Abernathy.",
            images=(image,),
        )
    )
    assert ok.value == 1.0
    assert bad.value == 0.0 and len(bad.details["unsupported"]) == 2
