"""OCR faithfulness: how closely a transcription matches what the image says.

For ``task=transcribe`` the answer is compared, after :func:`evals.normalize.normalize_text`,
with the reference text (ground truth when the request carried a reference id, else
reference OCR of the stored image at full resolution). Reported:

* CER and WER (jiwer, Levenshtein alignment over characters / whitespace tokens);
* faithfulness = 1 - inserted / |answer|: share of the answer that is not invented;
* coverage = 1 - deleted / |reference|: share of the reference that was not missed;
* **score = 1 - min(CER, 1)**, passed when score >= ``threshold`` (default 0.9).

Other tasks are ``not_evaluable`` (``extract`` is scored by :mod:`evals.field_accuracy`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import jiwer

from collector.semconv import TASK_EXTRACT, TASK_TRANSCRIBE
from evals.base import EvalCase, Evaluator, NotEvaluable, Score, usable_answer
from evals.evidence import text_evidence
from evals.normalize import normalize_text
from evals.reference_ocr import ReferenceOcr


@dataclass(frozen=True)
class TextComparison:
    cer: float
    wer: float
    faithfulness: float
    coverage: float
    ref_chars: int
    hyp_chars: int
    substituted: int
    deleted: int
    inserted: int

    @property
    def score(self) -> float:
        return 1.0 - min(self.cer, 1.0)


def compare_text(reference: str, hypothesis: str, *, normalize: bool = True) -> TextComparison:
    """Character and word error statistics of ``hypothesis`` against ``reference``.

    >>> round(compare_text("Total 12.50", "Total 12.5O").cer, 3)
    0.091
    """
    ref = normalize_text(reference) if normalize else reference
    hyp = normalize_text(hypothesis) if normalize else hypothesis
    if not ref:
        raise ValueError("reference text is empty")
    if not hyp:
        return TextComparison(1.0, 1.0, 1.0, 0.0, len(ref), 0, 0, len(ref), 0)
    chars = jiwer.process_characters(ref, hyp)
    words = jiwer.process_words(ref, hyp)
    return TextComparison(
        cer=float(chars.cer),
        wer=float(words.wer),
        faithfulness=1.0 - chars.insertions / len(hyp),
        coverage=1.0 - chars.deletions / len(ref),
        ref_chars=len(ref),
        hyp_chars=len(hyp),
        substituted=chars.substitutions,
        deleted=chars.deletions,
        inserted=chars.insertions,
    )


def explain(c: TextComparison, threshold: float, source: str) -> str:
    """One line a person can act on; the dominant error kind comes first."""
    kinds = {
        "missed text": c.deleted,
        "invented text": c.inserted,
        "misread characters": c.substituted,
    }
    dominant = max(kinds, key=lambda k: kinds[k])
    verdict = "ok" if c.score >= threshold else f"below {threshold:.2f}"
    parts = [f"CER {c.cer:.3f} WER {c.wer:.3f} ({verdict}) vs {source}"]
    if c.cer > 0:
        # Only the dominant kind is named, so explanations cluster by kind of failure.
        parts.append(
            f"mostly {dominant} (coverage {c.coverage:.0%}, faithfulness {c.faithfulness:.0%}, "
            f"{c.substituted} substitutions)"
        )
    return "; ".join(parts)


class OcrFaithfulness(Evaluator):
    """Transcription quality as 1 - CER against ground truth or reference OCR."""

    name = "ocr_faithfulness"
    version = "1"

    def __init__(
        self,
        *,
        threshold: float = 0.9,
        ocr: ReferenceOcr | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("threshold must be in [0, 1]")
        self.threshold = threshold
        self.ocr = ocr if ocr is not None else ReferenceOcr(cache_dir)

    def evaluate(self, case: EvalCase) -> list[Score]:
        task = case.task or (case.reference.task if case.reference else None)
        if task != TASK_TRANSCRIBE:
            other = "; scored by field_accuracy" if task == TASK_EXTRACT else ""
            raise NotEvaluable(f"task {task!r} is not a transcription{other}")
        answer = usable_answer(case)
        evidence = text_evidence(case, self.ocr)
        if not normalize_text(evidence.text):
            raise NotEvaluable(f"{evidence.source} has no text to compare against")
        c = compare_text(evidence.text, answer)
        details = {**asdict(c), "evidence": evidence.source, "threshold": self.threshold}
        passed = c.score >= self.threshold
        return [
            Score.scored(
                self.name,
                self.version,
                c.score,
                passed,
                explain(c, self.threshold, evidence.source.replace("_", " ")),
                details,
            )
        ]
