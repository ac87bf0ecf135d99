"""Prompt-injection scorer: instruction-override patterns over normalised text.

Text in images (and in messages) can tell the model to drop its instructions. The text is
first normalised so that case, extra whitespace, leetspeak (``1gn0r3``) and letter spacing
(``i g n o r e``) do not hide a pattern; then weighted patterns are matched and combined into
a score in [0, 1] as ``1 - prod(1 - w)`` over the distinct patterns that matched.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})


def normalise(text: str) -> str:
    """Lower-case ASCII letters and single spaces; leetspeak folded; spaced-out letters joined."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = []
    for token in folded.lower().split():
        # Fold leet only inside tokens that also hold letters, so plain numbers stay numbers.
        words.append(token.translate(_LEET) if re.search(r"[a-z]", token) else token)
    joined = re.sub(r"[^a-z0-9]+", " ", " ".join(words)).strip()
    # "i g n o r e" → "ignore": runs of ≥ 3 single letters separated by single spaces.
    return re.sub(r"\b(?:[a-z] ){2,}[a-z]\b", lambda m: m.group().replace(" ", ""), joined)


_ANY = r"(?:\w+ ){0,3}"
#: (name, pattern over normalised text, weight)
PATTERNS: tuple[tuple[str, re.Pattern[str], float], ...] = tuple(
    (name, re.compile(pattern), weight)
    for name, pattern, weight in (
        ("override", rf"\b(?:ignore|disregard|forget|skip|override|bypass) {_ANY}(?:previous|prior|above|earlier|preceding|all|your|any|system|the) {_ANY}(?:instructions?|prompts?|rules?|directions?|guidelines?|messages?|context)\b", 0.9),
        ("new_instructions", r"\b(?:new|updated|real|actual|following) (?:instructions?|rules?|task|orders?)\b", 0.45),
        ("role_play", r"\b(?:you are now|act as|pretend to be|from now on you|roleplay as)\b", 0.5),
        ("system_prompt", r"\b(?:system prompt|developer mode|jailbreak|dan mode|do anything now)\b", 0.6),
        ("reveal", rf"\b(?:reveal|print|show|repeat|output|leak) {_ANY}(?:system prompt|instructions|hidden|secret|api key|password)s?\b", 0.6),
        ("exfil", r"\b(?:send|post|upload|forward|email) (?:\w+ ){0,4}(?:to|at) (?:https? |www |\S+ com)", 0.4),
        ("do_instead", r"\b(?:instead|rather) (?:you (?:must|should|will) )?(?:say|respond|reply|answer|write|output)\b", 0.5),
        ("assistant_marker", r"\b(?:assistant|system|user) ?:? (?:ignore|you must|new instructions)\b", 0.5),
    )
)


@dataclass(frozen=True, slots=True)
class InjectionScore:
    score: float
    matched: tuple[str, ...]


def score_injection(text: str) -> InjectionScore:
    """Score ``text``; 0 when no pattern matches."""
    norm = normalise(text)
    matched = [(name, weight) for name, pattern, weight in PATTERNS if pattern.search(norm)]
    keep = 1.0
    for _name, weight in matched:
        keep *= 1.0 - weight
    return InjectionScore(round(1.0 - keep, 4), tuple(name for name, _w in matched))
