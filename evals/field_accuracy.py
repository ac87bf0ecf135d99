"""Field accuracy for ``task=extract``: did the answer give the asked field's true value?

The reference's ``qa`` list holds ``{"question", "answer", "field"}`` items; the item whose
question best matches the request's prompt is the one asked (the first item when the
prompt was not captured). The answer may be a bare value, a sentence around it, or JSON.

* numbers, amounts and codes must match exactly after canonicalisation ("$1,234.50" ==
  "1234.5"): a near-miss number is a wrong number;
* other values: exact after :func:`evals.normalize.normalize_text`, or contained as a whole
  phrase, score 1; else rapidfuzz partial ratio / 100, passing at ``fuzzy_threshold``.

When the answer is a JSON object and the reference has ``fields``, every expected field
present in the reference is checked and the score is the share that match.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rapidfuzz import fuzz

from evals.base import EvalCase, Evaluator, NotEvaluable, Score, usable_answer
from evals.claims import date_candidates, extract_claims
from evals.normalize import canonical_number, normalize_text

_EXACT_KINDS = ("number", "code", "email", "date")


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    return value if isinstance(value, list) else []


def _as_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def asked_item(qa: list[dict[str, Any]], prompt: str | None) -> dict[str, Any] | None:
    """The QA item the prompt asks about, or None when none plausibly matches."""
    items = [q for q in qa if isinstance(q, dict) and q.get("answer") not in (None, "")]
    if not items:
        return None
    if not prompt:
        return items[0]
    p = normalize_text(prompt)
    best = max(
        items, key=lambda q: fuzz.token_set_ratio(p, normalize_text(str(q.get("question", ""))))
    )
    if fuzz.token_set_ratio(p, normalize_text(str(best.get("question", "")))) < 60:
        return None
    return best


def match_value(expected: str, answer: str, *, fuzzy_threshold: float = 90.0) -> tuple[float, str]:
    """(similarity 0-1, how) of the expected value within the answer."""
    exp_claims = extract_claims(expected)
    if len(exp_claims) == 1 and exp_claims[0].kind in _EXACT_KINDS:
        kind, want = exp_claims[0].kind, exp_claims[0].canonical
        if kind == "number":
            got = {canonical_number(c.text) for c in extract_claims(answer) if c.kind == "number"}
            return (1.0, "exact number") if want in got else (0.0, f"number {expected!r} not given")
        found = [c for c in extract_claims(answer) if c.kind == kind]
        if want in {c.canonical for c in found}:
            return 1.0, f"exact {kind}"
        if kind == "date" and any(
            date_candidates(expected) & date_candidates(c.text) for c in found
        ):
            return 1.0, f"exact {kind}"
        if normalize_text(expected) in normalize_text(answer):
            return 1.0, f"exact {kind}"
        return 0.0, f"{kind} {expected!r} not given"
    digits = re.sub(r"\D", "", expected)
    if len(digits) >= 7 and not re.search(r"[^\W\d_]", expected):
        # Phone numbers and other digit strings: the digits decide, not the punctuation.
        runs = re.sub(r"[\s().\-+/]", "", answer)
        ok = digits in re.sub(r"\D", " ", runs).split() or digits in runs
        return (1.0, "exact digits") if ok else (0.0, f"digits of {expected!r} not given")
    e, a = normalize_text(expected), normalize_text(answer)
    if not e:
        return 0.0, "empty expected value"
    if e == a or re.search(rf"(?<!\w){re.escape(e)}(?!\w)", a):
        return 1.0, "exact"
    sim = fuzz.partial_ratio(e, a) / 100.0 if len(e) >= 4 else fuzz.ratio(e, a) / 100.0
    how = "fuzzy" if sim * 100 >= fuzzy_threshold else "mismatch"
    return sim, how


def _json_object(answer: str) -> dict[str, Any] | None:
    m = re.search(r"\{.*\}", answer, re.DOTALL)
    if not m:
        return None
    try:
        obj = json.loads(m.group(0))
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


class FieldAccuracy(Evaluator):
    """Exact/fuzzy match of extracted values against the reference's QA answer or fields."""

    name = "field_accuracy"
    version = "1"

    def __init__(self, *, threshold: float = 0.9, fuzzy_threshold: float = 90.0) -> None:
        self.threshold = threshold
        self.fuzzy_threshold = fuzzy_threshold

    def evaluate(self, case: EvalCase) -> list[Score]:
        task = case.task or (case.reference.task if case.reference else None)
        if task != "extract":
            raise NotEvaluable(f"task {task!r} is not an extraction")
        if case.reference is None:
            why = "not loaded" if case.reference_id else "not given (no x-aperture-reference-id)"
            raise NotEvaluable(f"field accuracy needs a reference; reference {why}")
        answer = usable_answer(case)
        obj = _json_object(answer)
        fields = _as_dict(case.reference.fields)
        if obj and fields:
            return [self._score_fields(obj, fields)]
        item = asked_item(_as_list(case.reference.qa), case.prompt)
        if item is None:
            raise NotEvaluable("the prompt matches no question of the reference")
        expected = str(item["answer"])
        sim, how = match_value(expected, answer, fuzzy_threshold=self.fuzzy_threshold)
        passed = sim >= self.threshold
        field = item.get("field") or item.get("question")
        explanation = f"{field}: {how} ({sim:.2f}); expected {expected!r}"
        details = {"field": field, "expected": expected, "match": how, "threshold": self.threshold}
        return [Score.scored(self.name, self.version, sim, passed, explanation, details)]

    def _score_fields(self, obj: dict[str, Any], fields: dict[str, Any]) -> Score:
        got = {normalize_text(str(k)).replace(" ", "_"): v for k, v in obj.items()}
        results: dict[str, tuple[float, str]] = {}
        for key, want in fields.items():
            k = normalize_text(str(key)).replace(" ", "_")
            if k not in got:
                continue
            results[str(key)] = match_value(
                str(want), str(got[k]), fuzzy_threshold=self.fuzzy_threshold
            )
        if not results:
            raise NotEvaluable("JSON answer names none of the reference's fields")
        value = sum(s for s, _ in results.values()) / len(results)
        wrong = [k for k, (s, _) in results.items() if s < self.threshold]
        explanation = f"{len(results) - len(wrong)} of {len(results)} fields match"
        if wrong:
            explanation += f"; wrong: {', '.join(wrong[:8])}"
        details = {"fields": {k: {"score": s, "match": h} for k, (s, h) in results.items()}}
        return Score.scored(
            self.name, self.version, value, value >= self.threshold, explanation, details
        )
