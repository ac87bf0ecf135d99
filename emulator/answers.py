"""Turn OCR lines into a chat answer for the three workload tasks.

Deterministic: the same lines and prompt always give the same text, so emulated traffic
can be replayed and scored.

    >>> answer("extract", "What is the total?", [OcrLine("Total: $12.50", (0, 0, 90, 12), 0.99)])
    '$12.50'
"""

from __future__ import annotations

import re

from rapidfuzz import fuzz, process

from collector.semconv import TASKS
from emulator.ocr import OcrLine
from emulator.workload.fields import FIELDS, FieldSpec

NOT_FOUND = "I cannot find that in the image."
NO_TEXT = "I cannot read any text in this image."
TAG_ALIASES = {"ocr": "transcribe", "transcription": "transcribe", "read": "transcribe",
               "qa": "extract", "question": "extract", "extraction": "extract", "vqa": "extract",
               "caption": "describe", "description": "describe", "summary": "describe"}
_TRANSCRIBE = re.compile(r"\b(transcribe|transcription|verbatim|ocr|all (of )?the text|"
                         r"read (out )?(all|the text|everything)|extract (all )?(the )?text)\b", re.I)
_DESCRIBE = re.compile(r"\b(describe|description|caption|summari[sz]e|what('s| is) (in|on|shown)"
                       r"|what do you see)\b", re.I)


def detect_task(prompt: str, tag: str | None) -> str:
    """The task from an explicit tag (header `x-aperture-task`), else from the prompt wording.
    An unknown tag is an error rather than a silent guess."""
    if tag is not None and tag.strip():
        t = tag.strip().lower()
        t = TAG_ALIASES.get(t, t)
        if t not in TASKS:
            raise ValueError(f"unknown task tag {tag!r}; expected one of {TASKS}")
        return t
    if _TRANSCRIBE.search(prompt):
        return "transcribe"
    if _DESCRIBE.search(prompt):
        return "describe"
    if field_for(prompt) is not None or prompt.strip().endswith("?"):
        return "extract"
    return "describe"


def field_for(question: str) -> FieldSpec | None:
    """The catalog field a question asks for: longest keyword found, else a close wording."""
    q = question.lower()
    hits = [(len(kw), f) for f in FIELDS.values() for kw in f.keywords
            if re.search(rf"(?<![a-z]){re.escape(kw)}(?![a-z])", q)]
    if hits:
        return max(hits, key=lambda h: h[0])[1]
    best = process.extractOne(q, {k: f.question.lower() for k, f in FIELDS.items()},
                              scorer=fuzz.token_set_ratio, score_cutoff=80)
    return FIELDS[best[2]] if best else None


def _label_end(label: str, text: str) -> int | None:
    """Index just past `label` in `text` (case-insensitive, tolerant of an OCR slip), when it
    starts at a word boundary; None when absent."""
    low = text.lower()

    def bounded(start: int, end: int) -> bool:
        return ((start == 0 or not low[start - 1].isalnum())
                and (end >= len(low) or not low[end].isalnum()))

    for m in re.finditer(re.escape(label), low):
        if bounded(m.start(), m.end()):
            return m.end()
    if len(label) >= 5:
        al = fuzz.partial_ratio_alignment(label, low, score_cutoff=85)
        if al is not None and bounded(al.dest_start, al.dest_end):
            return al.dest_end
    return None


def _value(spec: FieldSpec, rest: str, following: str | None) -> str | None:
    """The value after a label: on the label's line, or on the next line when the label stands
    alone there ("Total" / "1,234.50"). A label followed by other words ("Total items: 3") is
    another field's label, so the next line is not read for it. A value of the field's own shape
    ("$2,535.66") wins over a looser one ("8.25" in "Tax (8.25%): $2,535.66")."""
    if spec.regex() is None:
        rest = rest.lstrip(" :#.-\t")
        return rest.strip() or (following.strip() if following else None) or None
    alone = not rest.strip(" :#.-\t")
    texts = [rest, following] if alone and following else [rest]
    for text in texts:
        for rx in (spec.regex(), spec.labelled_regex()):
            m = rx.search(text) if rx is not None else None
            if m:
                return m.group(0).strip()
    return None


def tidy(key: str, value: str) -> str:
    """Write a value the way a model would answer it: canonical phone and money spacing."""
    if key == "phone":
        digits = re.sub(r"\D", "", value)
        if len(digits) == 10:
            return f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"
    if key in ("total", "subtotal", "tax"):
        return re.sub(r"([$€£])\s+", r"\1", value)
    return value


def extract_field(question: str, lines: list[OcrLine]) -> str | None:
    """The value of the field `question` asks for, read from the lines, or None."""
    spec = field_for(question)
    if spec is None or not lines:
        return None
    value = _find(spec, lines)
    return tidy(spec.key, value) if value else None


def _find(spec: FieldSpec, lines: list[OcrLine], labelled_only: bool = False) -> str | None:
    texts = [ln.text for ln in lines]
    if spec.heading:
        return texts[0]
    for label in spec.labels:
        for i, text in enumerate(texts):
            low = text.lower()
            if any(x in low for x in spec.exclude if x != label):
                continue
            end = _label_end(label, text)
            if end is None:
                continue
            value = _value(spec, text[end:], texts[i + 1] if i + 1 < len(texts) else None)
            if value:
                return value
    rx = spec.regex()
    if rx is not None and not labelled_only:  # no label seen: the first value of that shape
        for text in texts:
            m = rx.search(text)
            if m:
                return m.group(0).strip()
    return None


KIND_HINTS: dict[str, tuple[str, ...]] = {
    "invoice": ("invoice", "bill to", "due date", "unit price"),
    "contract": ("agreement", "parties", "party", "shall", "governing law", "liability"),
    "receipt": ("subtotal", "visa", "thank you for shopping", "tel ", "cash", "change due"),
    "form": (" form", "please print", "signature", "date of birth", "full name"),
    "report": ("report", "quarterly", "variance", "inventory", "budget"),
    "app screenshot": ("dashboard", "settings", "orders", "save", "cancel", "customers"),
}


def guess_kind(texts: list[str]) -> str:
    """The kind whose keywords occur most often; bullets make a slide, a few lines a sign."""
    blob = " ".join(texts).lower()
    scores = {k: sum(blob.count(w) for w in words) for k, words in KIND_HINTS.items()}
    scores["slide"] = 2 * sum(t.startswith(("- ", "• ")) for t in texts)
    best = max(scores, key=lambda k: scores[k])
    if scores[best] > 0:
        return best
    return "sign" if len(texts) <= 3 else "document"


def describe(lines: list[OcrLine]) -> str:
    texts = [ln.text for ln in lines]
    if not texts:
        return "An image with no readable text."
    kind = guess_kind(texts)
    article = "An" if kind[0] in "aeiou" else "A"
    parts = [f'{article} {kind} with {len(texts)} line{"s" if len(texts) != 1 else ""} of text, '
             f'headed "{texts[0]}".']
    facts = []
    for key in ("total", "date", "invoice_number", "order_number", "agreement_number",
                "effective_date", "email", "phone"):
        found = _find(FIELDS[key], lines, labelled_only=True)
        value = tidy(key, found) if found else None
        if value and value not in texts[0]:
            facts.append(f"{key.replace('_', ' ')} {value}")
        if len(facts) == 3:
            break
    if facts:
        parts.append("It shows " + "; ".join(facts) + ".")
    return " ".join(parts)


def answer(task: str, prompt: str, lines: list[OcrLine]) -> str:
    """The assistant's reply for `task` given what the model read."""
    if task == "transcribe":
        return "\n".join(ln.text for ln in lines) if lines else NO_TEXT
    if task == "extract":
        return extract_field(prompt, lines) or NOT_FOUND
    if task == "describe":
        return describe(lines)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
