"""The page model a content builder fills in and the renderer draws.

A page is a list of blocks laid out top to bottom. Everything on one block shares a
baseline, so the ground-truth line for a block is its segments left to right joined by a
space: the same rule the OCR reading order uses (group boxes by vertical overlap, then
sort by x), which keeps ground truth and OCR output comparable line by line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Seg:
    """A run of text on a row. `box` draws a decoration around it: field | button | pill."""

    text: str
    align: str = "left"
    scale: float = 1.0
    bold: bool = False
    box: str | None = None


@dataclass(frozen=True)
class Block:
    """One of: row (segments), table (cells, first row is the header), para (wrapped text),
    rule (a horizontal line, no text) or space (blank height, in body line heights)."""

    kind: str
    segs: tuple[Seg, ...] = ()
    cells: tuple[tuple[str, ...], ...] = ()
    numeric: tuple[bool, ...] = ()
    text: str = ""
    scale: float = 1.0
    gap: float = 0.0
    band: RGB | None = None


@dataclass(frozen=True)
class Theme:
    background: RGB = (255, 255, 255)
    ink: RGB = (20, 20, 24)
    muted: RGB = (90, 90, 100)
    accent: RGB = (32, 86, 170)
    on_accent: RGB = (255, 255, 255)
    grid: bool = False


@dataclass
class Doc:
    """What a content builder returns: blocks to draw plus the values a reader may be asked."""

    blocks: list[Block]
    fields: dict[str, str]
    theme: Theme = field(default_factory=Theme)
    line_spacing: float = 1.6


def row(*segs: Seg | str, gap: float = 0.0, band: RGB | None = None, scale: float = 1.0) -> Block:
    parts = tuple(Seg(s, scale=scale) if isinstance(s, str) else s for s in segs)
    return Block("row", segs=parts, gap=gap, band=band)


def kv(label: str, value: str, *, right: bool = False, gap: float = 0.0) -> Block:
    """A label and its value on one line: 'Total: $12.00' or 'Total ....... $12.00'."""
    if right:
        return Block("row", segs=(Seg(label), Seg(value, align="right")), gap=gap)
    return Block("row", segs=(Seg(f"{label} {value}"),), gap=gap)


def heading(text: str, scale: float = 1.6, align: str = "left", gap: float = 0.0,
            band: RGB | None = None) -> Block:
    return Block("row", segs=(Seg(text, align=align, scale=scale, bold=True),), gap=gap, band=band)


def table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], numeric: tuple[bool, ...],
          gap: float = 0.0) -> Block:
    return Block("table", cells=(header, *rows), numeric=numeric, gap=gap)


def para(text: str, scale: float = 1.0, gap: float = 0.0) -> Block:
    return Block("para", text=text, scale=scale, gap=gap)


def rule(gap: float = 0.0) -> Block:
    return Block("rule", gap=gap)


def space(lines: float) -> Block:
    return Block("space", gap=lines)
