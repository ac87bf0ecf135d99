"""How one emulated model misreads what it sees: pure functions over OCR lines.

The OCR model reads the pixels a route delivers; a world then says how a given model gets
those lines wrong, as a function of what it sees:

- the height of each line in the pixels read (its box height after the provider's resize),
- how dense the page is (lines read),
- the kind of content (guessed from the lines, as a reader would: receipt, slide, report...),
- the task (transcribe, extract, describe) and, for extraction, how many look-alike values
  (lines with a value of the asked field's shape) compete with the right one.

Every draw is a hash of (world, version, model, image sha256, task, what, line index), never
global random state, so one (image, model, world) always reads the same way.

    >>> m = Misreads(small_px=16, drop_small=0.5)
    >>> ctx = ReadContext("w@1", "gpt-4.1-mini", "ab" * 32, "transcribe", "")
    >>> len(misread([OcrLine("Total 12.50", (0, 0, 90, 30), 0.99)], ctx, m))
    1
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from emulator.answers import extract_field, field_for, guess_kind
from emulator.ocr import OcrLine

# Digits a reader confuses at small sizes (OCR confusion pairs: closed/open loops, 1/7).
DIGIT_SWAPS = {"0": "8", "1": "7", "2": "7", "3": "8", "4": "9", "5": "6", "6": "5", "7": "1", "8": "3", "9": "4"}
_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class Misreads:
    """One model's error behaviour in one world. Rates are probabilities per line (or per
    extraction), reached at full strength; zero everywhere means "reads what OCR reads".

    - ``small_px``: line height in the pixels read (box height) below which small-text errors
      start; they reach full strength at half that height.
    - ``drop_small`` / ``digit_small``: share of lines dropped / lines with one digit swapped at
      full small-text strength.
    - ``dense_lines`` / ``drop_dense``: beyond ``dense_lines`` lines read, lines drop at a rate
      rising linearly to ``drop_dense`` at twice that many.
    - ``lookalike``: extraction only; each look-alike value beyond the first adds this chance
      of reading the wrong one (capped at 0.9).
    - ``kinds``: extra per-line drop rate on content of a guessed kind (``answers.guess_kind``).
    """

    small_px: float = 0.0
    drop_small: float = 0.0
    digit_small: float = 0.0
    dense_lines: int = 0
    drop_dense: float = 0.0
    lookalike: float = 0.0
    kinds: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        rates = (self.drop_small, self.digit_small, self.drop_dense, self.lookalike, *self.kinds.values())
        if any(not 0 <= r <= 1 for r in rates):
            raise ValueError("misread rates must be in [0, 1]")
        if self.small_px < 0 or self.dense_lines < 0:
            raise ValueError("small_px and dense_lines must be >= 0")

    @property
    def none(self) -> bool:
        return not (self.drop_small or self.digit_small or self.drop_dense or self.lookalike
                    or any(self.kinds.values()))


NO_MISREADS = Misreads()


@dataclass(frozen=True)
class ReadContext:
    """Who reads what: ``world`` is ``name@version``; ``prompt`` matters for extraction."""

    world: str
    model: str
    image_sha256: str
    task: str
    prompt: str


def draw(ctx: ReadContext, what: str, index: int) -> float:
    """A uniform number in [0, 1) fixed by the context, the kind of error and the line."""
    key = f"{ctx.world}\0{ctx.model}\0{ctx.image_sha256}\0{ctx.task}\0{what}\0{index}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def line_height(line: OcrLine) -> float:
    """The line's height in the pixels the model read (its box height)."""
    return max(0.0, float(line.box[3]) - float(line.box[1]))


def small_strength(height: float, small_px: float) -> float:
    """0 at or above ``small_px``, rising linearly to 1 at half of it."""
    if small_px <= 0 or height >= small_px:
        return 0.0
    return min(1.0, (small_px - height) / (small_px / 2))


def dense_strength(n_lines: int, dense_lines: int) -> float:
    """0 up to ``dense_lines`` lines, rising linearly to 1 at twice as many."""
    if dense_lines <= 0 or n_lines <= dense_lines:
        return 0.0
    return min(1.0, (n_lines - dense_lines) / dense_lines)


def drop_rate(line: OcrLine, n_lines: int, kind: str, m: Misreads) -> float:
    """The chance this line is missed: small text, dense page and content kind combine as
    independent misses."""
    keep = (1 - m.drop_small * small_strength(line_height(line), m.small_px)) \
        * (1 - m.drop_dense * dense_strength(n_lines, m.dense_lines)) \
        * (1 - m.kinds.get(kind, 0.0))
    return 1 - keep


def swap_digit(text: str, u: float) -> str:
    """``text`` with one digit (chosen by ``u``) replaced by its look-alike."""
    digits = list(_DIGIT.finditer(text))
    if not digits:
        return text
    d = digits[min(int(u * len(digits)), len(digits) - 1)]
    return text[: d.start()] + DIGIT_SWAPS[d.group(0)] + text[d.end():]


def lookalikes(prompt: str, lines: list[OcrLine]) -> tuple[int, int | None]:
    """For an extraction prompt: how many lines hold a value of the asked field's shape, and
    the index of the line the right answer is read from (None when it is not read at all)."""
    spec = field_for(prompt)
    if spec is None:
        return 0, None
    rx = spec.regex()
    count = sum(1 for ln in lines if rx is not None and rx.search(ln.text))
    value = extract_field(prompt, lines)
    if not value:
        return count, None
    squeezed = re.sub(r"\W", "", value)
    source = next((i for i, ln in enumerate(lines) if squeezed and squeezed in re.sub(r"\W", "", ln.text)), None)
    return count, source


def misread(lines: list[OcrLine], ctx: ReadContext, m: Misreads) -> list[OcrLine]:
    """The lines as this model reads them in this world (see the module docstring)."""
    if m.none or not lines:
        return lines
    kind = guess_kind([ln.text for ln in lines]) if m.kinds else ""
    confused: int | None = None
    if ctx.task == "extract" and m.lookalike > 0:
        count, labelled = lookalikes(ctx.prompt, lines)
        if labelled is not None and draw(ctx, "lookalike", 0) < min(0.9, m.lookalike * max(0, count - 1)):
            confused = labelled  # the labelled value is lost; a look-alike answers instead
    out = []
    for i, line in enumerate(lines):
        if i == confused or draw(ctx, "drop", i) < drop_rate(line, len(lines), kind, m):
            continue
        p_digit = m.digit_small * small_strength(line_height(line), m.small_px)
        if p_digit > 0 and draw(ctx, "digit", i) < p_digit:
            line = OcrLine(swap_digit(line.text, draw(ctx, "which-digit", i)), line.box, line.score)
        out.append(line)
    return out
