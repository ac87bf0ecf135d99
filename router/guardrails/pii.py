"""Pure text recognizers for personal data and secrets.

Each recognizer is a regex that proposes candidates plus a validator that removes the false
ones a regex alone cannot (Luhn for cards, ISO 13616 mod-97 for IBANs, SSN area rules, address
parsing by :mod:`ipaddress`, Shannon entropy for secrets). OCR text is noisy, so separators
(spaces, dashes, dots) inside numbers are tolerated.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Finding:
    """One recognised item: ``text[start:end]`` is the match; ``score`` is the confidence in [0, 1]."""

    kind: str
    start: int
    end: int
    text: str
    score: float


def digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


def luhn_valid(number: str) -> bool:
    """The Luhn check over a string of digits (card numbers; 12-19 digits carry one)."""
    if not number.isdigit() or len(number) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_check_digit(payload: str) -> str:
    """The digit that makes ``payload + digit`` Luhn-valid."""
    for d in "0123456789":
        if luhn_valid(payload + d):
            return d
    raise ValueError(payload)  # pragma: no cover - one of ten digits always fits


def iban_valid(text: str) -> bool:
    """ISO 13616: move the first four characters to the end, letters → 10..35, mod 97 == 1."""
    compact = re.sub(r"[\s-]", "", text).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def iban_check_digits(country: str, bban: str) -> str:
    """The two check digits that make ``country + cc + bban`` a valid IBAN."""
    numeric = int("".join(str(int(ch, 36)) for ch in (bban + country + "00").upper()))
    return f"{98 - numeric % 97:02d}"


def ssn_valid(text: str) -> bool:
    """US SSN rules: area not 000/666/9xx, group not 00, serial not 0000."""
    d = digits(text)
    if len(d) != 9:
        return False
    area, group, serial = d[:3], d[3:5], d[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def shannon_entropy(text: str) -> float:
    """Bits per character; random base64/hex secrets sit well above English words (~3 - 4)."""
    if not text:
        return 0.0
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _ip_valid(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _card_valid(text: str) -> bool:
    d = digits(text)
    return 13 <= len(d) <= 19 and luhn_valid(d) and len(set(d)) > 1


_DATE = re.compile(r"\d{1,4}[./-]\d{1,2}[./-]\d{1,4}")


def _phone_valid(text: str) -> bool:
    d = digits(text)
    return 8 <= len(d) <= 15 and len(set(d)) > 2 and not _DATE.fullmatch(text)


_SECRET_PREFIXES = r"(?:sk-(?:proj-|ant-)?|AKIA|ASIA|ghp_|gho_|ghs_|github_pat_|xox[abposr]-|AIza|glpat-|sk_live_|rk_live_)"


def _secret_valid(text: str) -> bool:
    body = re.sub(_SECRET_PREFIXES, "", text, count=1)
    return len(body) >= 12 and shannon_entropy(body) >= 3.0


def _generic_secret_valid(text: str) -> bool:
    has_classes = sum(bool(re.search(p, text)) for p in (r"[a-z]", r"[A-Z]", r"\d")) == 3
    return has_classes and shannon_entropy(text) >= 4.0


_Validator = Callable[[str], bool]

#: (kind, pattern, validator, score). Order matters: earlier kinds claim overlapping spans first.
RECOGNIZERS: tuple[tuple[str, re.Pattern[str], _Validator, float], ...] = (
    ("secret", re.compile(_SECRET_PREFIXES + r"[A-Za-z0-9_\-]{12,}"), _secret_valid, 0.95),
    ("email", re.compile(r"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}\b"), lambda _t: True, 0.95),
    ("iban", re.compile(r"\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{4}){2,7}(?:[ -]?[A-Z0-9]{1,4})?\b"), iban_valid, 0.99),
    ("card", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card_valid, 0.97),
    ("ssn", re.compile(r"(?<![\d-])\d{3}[- ]\d{2}[- ]\d{4}(?![\d-])"), ssn_valid, 0.85),
    ("ipv4", re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"), _ip_valid, 0.8),
    ("ipv6", re.compile(r"(?<![:\w])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![:\w])"), lambda t: ":" in t and _ip_valid(t) and len(t) > 3, 0.8),
    (
        "phone",
        re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,4}(?![\w])"),
        _phone_valid,
        0.9,
    ),
    ("secret", re.compile(r"(?<![\w/+])[A-Za-z0-9_\-+/]{32,}={0,2}(?![\w/+])"), _generic_secret_valid, 0.7),
)


def find_pii(text: str) -> list[Finding]:
    """Every validated finding in ``text``, non-overlapping, in text order."""
    taken: list[tuple[int, int]] = []
    found: list[Finding] = []
    for kind, pattern, valid, score in RECOGNIZERS:
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(start < e and s < end for s, e in taken) or not valid(match.group()):
                continue
            taken.append((start, end))
            found.append(Finding(kind, start, end, match.group(), score))
    return sorted(found, key=lambda f: f.start)
