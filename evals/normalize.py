"""Text normalisation shared by every text-comparing evaluator.

Two strings that a reader would call "the same text" should compare equal: the model's
answer and the ground truth differ in Unicode forms, case, line wrapping, typographic
quotes and the markdown that chat models wrap transcriptions in. Both sides go through the
same function, so anything removed is removed symmetrically. See docs/evals.md.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

# Typographic variants NFKC leaves alone but OCR and models use interchangeably.
_TRANSLATE = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u2212": "-",
        "\u2026": "...",
    }
)
_FENCE = re.compile(r"^\s*```[^\n]*$", re.MULTILINE)
_HEADING = re.compile(r"^\s*#{1,6}\s+", re.MULTILINE)
_BULLET = re.compile(r"^\s*[-*+\u2022]\s+", re.MULTILINE)
_EMPHASIS = re.compile(r"\*\*+|__+")
_WS = re.compile(r"\s+")


def _drop_invisible(text: str) -> str:
    # Format (Cf), control (Cc, except whitespace), surrogates and private-use characters
    # never carry reading content; zero-width joiners and BOMs are the usual culprits.
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch.isspace():
            out.append(ch)
        elif cat in ("Cf", "Cc", "Cs", "Co", "Cn"):
            continue
        else:
            out.append(ch)
    return "".join(out)


def _strip_markdown(text: str) -> str:
    text = _FENCE.sub("", text)
    text = _HEADING.sub("", text)
    text = _BULLET.sub("", text)
    return _EMPHASIS.sub("", text)


def _once(text: str, markdown: bool) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = _drop_invisible(text)
    if markdown:
        text = _strip_markdown(text)
    text = text.casefold().translate(_TRANSLATE)
    text = unicodedata.normalize("NFKC", text)
    return _WS.sub(" ", text).strip()


def normalize_text(text: str, *, markdown: bool = True) -> str:
    """NFKC, drop invisible characters, strip markdown wrappers, case-fold, unify quotes and
    dashes, collapse whitespace, strip. Idempotent: ``n(n(x)) == n(x)``.

    >>> normalize_text("  **Total:**\\u00a0 ＄12  \\n “paid” ")
    'total: $12 "paid"'
    """
    # A pass can expose new material for an earlier step (a bullet revealed by removing an
    # emphasis run, a fold that NFKC maps again), so iterate to the fixed point.
    for _ in range(8):
        nxt = _once(text, markdown)
        if nxt == text:
            return nxt
        text = nxt
    return text


def tokens(text: str) -> list[str]:
    """Words of already-normalised text, for WER and term statistics."""
    return text.split()


_NUM_CHARS = re.compile(r"[^\d.,\-]")


def canonical_number(raw: str) -> str | None:
    """Canonical decimal string of a written number, or None when it is not one.

    Thousands separators and currency signs go; a single trailing separator group decides
    the decimal mark, so "1,234.56", "1.234,56", "$1234.560" all become "1234.56".

    >>> canonical_number("1,234.56"), canonical_number("1.234,56"), canonical_number("007")
    ('1234.56', '1234.56', '7')
    """
    s = _NUM_CHARS.sub("", raw.replace("\u2212", "-"))
    neg = s.startswith("-")
    s = s.replace("-", "")
    if not s or not any(c.isdigit() for c in s):
        return None
    last_dot, last_comma = s.rfind("."), s.rfind(",")
    if last_dot >= 0 and last_comma >= 0:
        dec = "." if last_dot > last_comma else ","
    elif last_comma >= 0:
        # "1,234" / "12,345,678" are thousands; "12,5" / "0,25" is a decimal comma.
        groups = s.split(",")
        thousands = len(groups) > 1 and all(len(g) == 3 for g in groups[1:]) and groups[0] != "0"
        dec = "" if thousands else ("," if len(groups) == 2 else "")
    elif last_dot >= 0:
        groups = s.split(".")
        dec = "." if len(groups) == 2 else ""
    else:
        dec = ""
    if dec:
        whole, _, frac = s.rpartition(dec)
        whole = whole.replace(".", "").replace(",", "")
        s = f"{whole or '0'}.{frac.replace('.', '').replace(',', '')}"
    else:
        s = s.replace(".", "").replace(",", "")
    try:
        value = Decimal(s)
    except InvalidOperation:
        return None
    if neg:
        value = -value
    text = format(value.normalize(), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text
