"""What the image really says: ground truth when loaded, else reference OCR.

Shared by the OCR-faithfulness and grounding evaluators so both judge an answer against
the same evidence and report where it came from (``details["evidence"]``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from evals.base import EvalCase, NotEvaluable, Reference
from evals.reference_ocr import ReferenceOcr

Source = Literal["reference", "reference_ocr"]


@dataclass(frozen=True)
class Evidence:
    text: str
    source: Source


def reference_text(ref: Reference) -> str | None:
    """The reference's full text: ``text``, else its ``lines`` joined, else None."""
    if ref.text and ref.text.strip():
        return ref.text
    if ref.lines:
        joined = "\n".join(str(x) for x in ref.lines if x is not None)
        if joined.strip():
            return joined
    return None


def _flatten(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return [value]
        return _flatten(parsed) if not isinstance(parsed, str) else [parsed]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_flatten(k), *_flatten(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _flatten(v)]
    return [str(value)]


def reference_facts(ref: Reference) -> str:
    """Field names, field values and QA pairs as text lines (they are about the image too)."""
    return "\n".join(_flatten(ref.fields) + _flatten(ref.qa))


def ocr_evidence(case: EvalCase, ocr: ReferenceOcr) -> Evidence:
    """Reference OCR of every image of the case, in request order."""
    if not case.images:
        raise NotEvaluable("request has no image spans")
    texts: list[str] = []
    for i, img in enumerate(case.images):
        try:
            data = img.load()
        except OSError as exc:
            raise NotEvaluable(f"image {i} blob unreadable: {exc}") from exc
        if not data:
            raise NotEvaluable(
                f"image {i} bytes not stored (blob store disabled or blob "
                f"{(img.sha256 or '?')[:12]} missing) and no reference loaded"
            )
        try:
            texts.append(ocr.read(data, sha256=img.sha256).text)
        except ValueError as exc:
            raise NotEvaluable(f"image {i}: {exc}") from exc
    return Evidence("\n".join(texts), "reference_ocr")


def text_evidence(case: EvalCase, ocr: ReferenceOcr, *, with_facts: bool = False) -> Evidence:
    """Ground truth text when a reference is loaded, else reference OCR; raises NotEvaluable."""
    ref = case.reference
    if ref is not None:
        text = reference_text(ref)
        facts = reference_facts(ref) if with_facts else ""
        combined = "\n".join(t for t in (text, facts) if t)
        if combined.strip():
            return Evidence(combined, "reference")
    return ocr_evidence(case, ocr)
