"""Grounding: is every checkable claim of an answer actually on the image?

Claims (:mod:`evals.claims`) are looked up in the image's evidence (ground truth text,
fields and QA when loaded, else reference OCR). Numbers, dates, codes and e-mails must
match exactly after canonicalisation (a fuzzy match would accept exactly the wrong digit we
are looking for); codes tolerate the usual OCR confusions (O/0, I/l/1, S/5, B/8, Z/2).
Names and quoted strings match with rapidfuzz's partial ratio (>= ``fuzzy_threshold``,
long enough claims only) to tolerate OCR slips in the evidence.

score = supported / claims; an answer without checkable claims is ``not_evaluable``
("no checkable claims"), never a free 1.0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from rapidfuzz import fuzz

from evals.base import EvalCase, Evaluator, NotEvaluable, Score, usable_answer
from evals.claims import DATE_ANY, Claim, date_candidates, extract_claims
from evals.evidence import text_evidence
from evals.normalize import canonical_number, normalize_text
from evals.reference_ocr import ReferenceOcr

_CONFUSABLE = str.maketrans({"o": "0", "i": "1", "l": "1", "s": "5", "b": "8", "z": "2"})
_EVIDENCE_NUMBER = re.compile(r"\d{1,3}(?: \d{3})+(?:[.,]\d+)?|\d[\d,.\u00a0']*\d|\d")


@dataclass(frozen=True)
class EvidenceIndex:
    """Evidence text pre-digested for claim lookups."""

    text: str
    compact: str
    numbers: frozenset[str]
    dates: frozenset[str]
    lines: tuple[str, ...] = ()

    @classmethod
    def build(cls, evidence: str) -> EvidenceIndex:
        text = normalize_text(evidence, markdown=False)
        numbers = set()
        for m in _EVIDENCE_NUMBER.finditer(evidence):
            for raw in (m.group(0), m.group(0).replace(" ", "")):
                c = canonical_number(raw)
                if c is not None:
                    numbers.add(c)
            numbers.update(canonical_number(d) or d for d in re.findall(r"\d+", m.group(0)))
        dates = set()
        for m in DATE_ANY.finditer(evidence):
            dates |= date_candidates(m.group(0))
        compact = re.sub(r"[^0-9a-z]", "", text).translate(_CONFUSABLE)
        lines = tuple(
            x for x in (normalize_text(x, markdown=False) for x in evidence.splitlines()) if x
        )
        return cls(text, compact, frozenset(numbers), frozenset(dates), lines)


def is_supported(claim: Claim, ev: EvidenceIndex, *, fuzzy_threshold: float = 90.0) -> bool:
    """Whether ``claim`` is backed by the evidence (see module docstring for the rules)."""
    if claim.kind == "number":
        return claim.canonical in ev.numbers
    if claim.kind == "date":
        cands = date_candidates(claim.text)
        return bool(cands & ev.dates) if cands else claim.canonical in ev.text
    if claim.kind == "code":
        return claim.canonical.translate(_CONFUSABLE) in ev.compact
    if claim.kind == "email":
        return claim.canonical in ev.text
    needles = (claim.canonical, *claim.alternatives)
    if any(_text_found(n, ev.text, fuzzy_threshold) for n in needles):
        return True
    return claim.kind == "name" and any(_across_lines(n.split(), ev.lines) for n in needles)


def _across_lines(words: list[str], lines: tuple[str, ...]) -> bool:
    """A name run made of the end of one evidence line and the start of the following ones.

    Answers often flatten line breaks ("Oak Avenue" + "Reno, NV" -> "Oak Avenue Reno"), so
    a capitalised run may span consecutive lines without being an invented name.
    """
    for k in range(1, len(words)):
        head = re.compile(rf"(?<!\w){re.escape(' '.join(words[:k]))}$")
        for i, line in enumerate(lines[:-1]):
            if head.search(line) and _starts_at(words[k:], lines, i + 1):
                return True
    return False


def _starts_at(words: list[str], lines: tuple[str, ...], i: int) -> bool:
    if i >= len(lines):
        return False
    if re.match(rf"{re.escape(' '.join(words))}(?!\w)", lines[i]):
        return True
    # Or line i whole, then the rest from line i + 1.
    return any(
        " ".join(words[:k]) == lines[i] and _starts_at(words[k:], lines, i + 1)
        for k in range(1, len(words))
    )


def _text_found(needle: str, haystack: str, fuzzy_threshold: float) -> bool:
    if re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", haystack):
        return True
    if len(needle) < 6:
        return False  # too short for a fuzzy match to mean anything
    return fuzz.partial_ratio(needle, haystack) >= fuzzy_threshold


class Grounding(Evaluator):
    """Share of an answer's checkable claims that the image's text supports."""

    name = "grounding"
    version = "1"

    def __init__(
        self,
        *,
        threshold: float = 0.9,
        fuzzy_threshold: float = 90.0,
        ocr: ReferenceOcr | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.threshold = threshold
        self.fuzzy_threshold = fuzzy_threshold
        self.ocr = ocr if ocr is not None else ReferenceOcr(cache_dir)

    def evaluate(self, case: EvalCase) -> list[Score]:
        answer = usable_answer(case)
        claims = extract_claims(answer)
        if not claims:
            raise NotEvaluable("no checkable claims")
        evidence = text_evidence(case, self.ocr, with_facts=True)
        index = EvidenceIndex.build(evidence.text)
        unsupported = [
            c for c in claims if not is_supported(c, index, fuzzy_threshold=self.fuzzy_threshold)
        ]
        n = len(claims)
        value = (n - len(unsupported)) / n
        source = evidence.source.replace("_", " ")
        explanation = f"{n - len(unsupported)} of {n} claims supported by {source}"
        if unsupported:
            listed = ", ".join(f"{c.kind} {c.text!r}" for c in unsupported[:8])
            more = f" (+{len(unsupported) - 8} more)" if len(unsupported) > 8 else ""
            explanation += f"; unsupported: {listed}{more}"
        details = {
            "evidence": evidence.source,
            "claims": n,
            "unsupported": [{"kind": c.kind, "text": c.text} for c in unsupported],
            "kinds": sorted({c.kind for c in claims}),
            "threshold": self.threshold,
        }
        return [
            Score.scored(
                self.name, self.version, value, value >= self.threshold, explanation, details
            )
        ]
