"""Checkable claims in an answer: the parts that are either on the image or made up.

Only spans whose truth can be looked up in the image's text count: quoted strings,
e-mail addresses, dates, codes and IDs, amounts and numbers (two digits or more; a lone
digit is usually list numbering or a count), and capitalised names. Extraction runs in that
order and masks what it took, so "INV-2024-001" is one code, not a code plus numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Literal

from evals.normalize import canonical_number, normalize_text

Kind = Literal["quote", "email", "date", "code", "number", "name"]


@dataclass(frozen=True)
class Claim:
    kind: Kind
    text: str
    canonical: str
    start: int
    end: int
    # Other readings that count as support, e.g. "Contact Bob Jones" -> "bob jones" when the
    # first capital may only mark the start of a sentence.
    alternatives: tuple[str, ...] = ()


_MONTHS = (
    "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    "sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
_PATTERNS: list[tuple[Kind, re.Pattern[str]]] = [
    ("quote", re.compile(r"[\"\u201c\u201d]([^\"\u201c\u201d\n]{3,200})[\"\u201c\u201d]")),
    ("email", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", re.ASCII)),
    (
        "date",
        re.compile(
            rf"\b(?:\d{{4}}-\d{{1,2}}-\d{{1,2}}|\d{{1,2}}[/.]\d{{1,2}}[/.]\d{{2,4}}"
            rf"|\d{{1,2}}\s+(?:{_MONTHS})\.?,?\s+\d{{4}}|(?:{_MONTHS})\.?\s+\d{{1,2}},?\s+\d{{4}})\b",
            re.IGNORECASE,
        ),
    ),
    # Letters and digits mixed, or digit groups joined by - / _ : order numbers, SKUs, IBANs.
    (
        "code",
        re.compile(
            r"\b(?=[A-Za-z0-9-/_#]*\d)(?=[A-Za-z0-9-/_#]*[A-Za-z-/_#])"
            r"[A-Za-z0-9#]+(?:[-/_][A-Za-z0-9]+)*\b"
        ),
    ),
    (
        "number",
        re.compile(
            r"(?<![\w.,])[-\u2212]?[$\u20ac\u00a3\u00a5]?\s?\d[\d,.\u00a0']*\d%?|(?<![\w.,])\d\d%?"
        ),
    ),
]
_NAME = re.compile(
    r"\b[A-Z][\w'\u2019&.-]*[a-zA-Z\u00c0-\u024f]"
    r"(?:[ \t]+(?:(?:de|van|von|der|den|del|of|the|and|&|da|di|du|la|le)[ \t]+){0,2}[A-Z][\w'\u2019&.-]*[a-zA-Z\u00c0-\u024f])*"
)

# Words that open sentences or label things; a capitalised one of these is not a name.
_NOT_NAME_WORDS = """a an the this that these those it its there here yes no not i we you he she they my our
    your in on at by for from to of and but or if when what which who whom where why how is are
    was were be been has have had do does did can could will would should may might must
    total subtotal tax amount date time invoice receipt order number no. item items qty price
    name address phone email e-mail page note notes answer text image document photo picture
    the sure certainly okay ok based according however also then so as with without about
    please thank thanks hello hi dear sincerely regards best from: to: subject re fw
    transcription transcript extracted fields field value values following below above
    monday tuesday wednesday thursday friday saturday sunday"""
_NOT_NAMES = frozenset(_NOT_NAME_WORDS.split())
_ALLCAPS_MIN = 2


def _mask(text: str, start: int, end: int) -> str:
    # NUL, not spaces: a masked number between two words must still break a name run.
    return text[:start] + "\0" * (end - start) + text[end:]


def _canonical(kind: Kind, raw: str) -> str | None:
    if kind == "number":
        return canonical_number(raw)
    if kind == "code":
        return re.sub(r"[^0-9a-z]", "", raw.lower()) or None
    if kind == "email":
        return raw.lower()
    return normalize_text(raw, markdown=False) or None


_SENTENCE_START = re.compile(r"(?:^|[.!?:;\n]|^\s*(?:\d+[.)]|[-*\u2022]))\s*$")


def _names(text: str) -> list[Claim]:
    out: list[Claim] = []
    for m in _NAME.finditer(text):
        words = m.group(0).split()
        start = m.start()
        at_sentence_start = bool(_SENTENCE_START.search(text[max(0, start - 12) : start]))
        if len(words) == 1 and at_sentence_start:
            continue  # "Paid", "Apples": a capital that only marks a sentence start
        # Drop leading sentence starters / labels ("The Acme Corp" -> "Acme Corp").
        while words and words[0].lower().rstrip(".:,") in _NOT_NAMES:
            start = text.index(words[0], start) + len(words[0])
            words = words[1:]
        while words and words[-1].lower().rstrip(".:,") in _NOT_NAMES:
            words = words[:-1]
        if not words:
            continue
        raw = " ".join(words).rstrip(".,:;")
        if len(raw) < _ALLCAPS_MIN or raw.isupper() and len(raw) <= 3:
            continue
        begin = text.index(words[0], start)
        alts: tuple[str, ...] = ()
        if at_sentence_start and begin == m.start() and len(words) > 2:
            alts = (normalize_text(" ".join(words[1:]), markdown=False),)
        canonical = normalize_text(raw, markdown=False)
        out.append(Claim("name", raw, canonical, begin, begin + len(raw), alts))
    return out


def extract_claims(answer: str) -> list[Claim]:
    """Checkable claims of ``answer`` in order of appearance; never raises on str input.

    >>> [(c.kind, c.canonical) for c in extract_claims("Paid $1,234.50 to Acme Corp on 2024-03-01")]
    [('number', '1234.5'), ('name', 'acme corp'), ('date', '2024-03-01')]
    """
    text = answer
    claims: list[Claim] = []
    structured = _looks_structured(answer)
    for kind, pattern in _PATTERNS:
        if kind == "quote" and structured:
            continue  # JSON quotes are syntax; its values are checked by kind below
        for m in pattern.finditer(text):
            raw = m.group(1) if kind == "quote" else m.group(0)
            raw = raw.strip()
            if kind == "quote" and (len(raw.split()) < 2 or _KEY_AFTER.match(text, m.end())):
                continue
            canonical = _canonical(kind, raw)
            if canonical is None or (kind == "number" and len(re.sub(r"\D", "", raw)) < 2):
                continue
            if kind == "number" and _COUNT_AFTER.match(text, m.end()):
                continue  # "12 lines of text": a count of what is seen, not text on the image
            claims.append(Claim(kind, raw, canonical, m.start(), m.end()))
            if kind != "quote":
                # A quoted string is one claim, but names/numbers inside it still count.
                text = _mask(text, m.start(), m.end())
    claims.extend(_names(text))
    others = {c.canonical for c in claims if c.kind != "quote"}
    claims = [c for c in claims if c.kind != "quote" or c.canonical not in others]
    claims.sort(key=lambda c: (c.start, c.kind))
    return claims


_KEY_AFTER = re.compile(r"\s*:")
_COUNT_AFTER = re.compile(
    r"\s+(?:lines?|items?|rows?|columns?|words?|characters?|pages?|fields?|entries|people|"
    r"persons?|images?|paragraphs?|sections?|bullets?|points?|icons?|buttons?|tabs?|cells?|"
    r"digits?|letters?|times)\b",
    re.IGNORECASE,
)


def _looks_structured(answer: str) -> bool:
    head = answer.lstrip()[:16].lower()
    return head.startswith(("{", "[", "```json"))


_MONTH_ABBR = "jan feb mar apr may jun jul aug sep oct nov dec"
_MONTH_NUM = {m: i for i, m in enumerate(_MONTH_ABBR.split(), 1)}
DATE_ANY = re.compile(
    rf"\d{{4}}-\d{{1,2}}-\d{{1,2}}|\d{{1,2}}[/.]\d{{1,2}}[/.]\d{{2,4}}"
    rf"|\d{{1,2}}\s+(?:{_MONTHS})\.?,?\s+\d{{4}}|(?:{_MONTHS})\.?\s+\d{{1,2}},?\s+\d{{4}}",
    re.IGNORECASE,
)


def date_candidates(raw: str) -> set[str]:
    """ISO dates ``raw`` may denote (both readings when day/month order is ambiguous)."""
    s = (
        raw.lower().replace(",", " ").replace(".", " ")
        if not re.match(r"^\d+\.\d+\.\d+$", raw)
        else raw
    )
    found = re.findall(r"\d+", s)
    if any(len(x) > 4 for x in found):
        return set()
    nums = [int(x) for x in found]
    month = next((_MONTH_NUM[w[:3]] for w in re.findall(r"[a-z]+", s) if w[:3] in _MONTH_NUM), None)
    options: list[tuple[int, int, int]] = []
    if month is not None and len(nums) == 2:
        day, year = (nums[0], nums[1]) if nums[1] > 31 else (nums[1], nums[0])
        options.append((year, month, day))
    elif len(nums) == 3:
        a, b, c = nums
        if a > 31:
            options.append((a, b, c))
        else:
            year = c + 2000 if c < 100 else c
            options += [(year, b, a), (year, a, b)]
    out = set()
    for y, m, d in options:
        try:
            out.add(date(y, m, d).isoformat())
        except (ValueError, OverflowError):
            continue
    return out
