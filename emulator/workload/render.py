"""Lay out a Doc on a canvas and draw it with Pillow's bundled scalable font.

Only `ImageFont.load_default(size=...)` is used (a FreeType font shipped inside Pillow
>= 10.1), so pages look the same on every machine and nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from emulator.workload.doc import RGB, Block, Doc, Seg

MAX_SIDE = 4096


@lru_cache(maxsize=128)
def font(size: int) -> ImageFont.FreeTypeFont:
    loaded = ImageFont.load_default(size=max(1, size))
    if not isinstance(loaded, ImageFont.FreeTypeFont):
        raise RuntimeError("Pillow with FreeType (>= 10.1) is required for a scalable default font")
    return loaded


@lru_cache(maxsize=128)
def cap_height(size: int) -> float:
    """Height in px of the inked capital 'H' at this font size (what `text_height_px` reports)."""
    bbox = font(size).getmask("H").getbbox()
    return float(bbox[3] - bbox[1]) if bbox else float(size) * 0.7


@lru_cache(maxsize=65536)
def text_width(text: str, size: int) -> float:
    """Advance width in px; cached because layout measures the same cells many times."""
    return float(font(size).getlength(text))


@dataclass(frozen=True)
class Item:
    text: str
    x: float
    size: int
    bold: bool
    box: str | None


@dataclass(frozen=True)
class PlacedRow:
    top: int
    height: int
    baseline: int
    items: tuple[Item, ...]
    band: RGB | None = None
    rule: bool = False
    header: bool = False

    @property
    def text(self) -> str:
        return " ".join(i.text for i in sorted(self.items, key=lambda i: i.x) if i.text)


@dataclass(frozen=True)
class Rendered:
    image: Image.Image
    lines: list[str]
    rows: list[PlacedRow]


def _size(font_px: int, scale: float) -> int:
    return max(6, round(font_px * scale))


def _gap(font_px: int) -> float:
    return 2.0 * font_px


def _row_width(block: Block, font_px: int) -> float:
    widths = [text_width(s.text, _size(font_px, s.scale)) + _pad(s, font_px) for s in block.segs]
    return sum(widths) + _gap(font_px) * max(0, len(widths) - 1)


def _pad(seg: Seg, font_px: int) -> float:
    return 1.2 * font_px if seg.box else 0.0


def _col_widths(block: Block, font_px: int) -> list[float]:
    ncol = len(block.cells[0])
    return [max(text_width(r[c], font_px) for r in block.cells) for c in range(ncol)]


def needed_width(doc: Doc, font_px: int) -> float:
    """Content width (without margins) that every row and table needs to fit unwrapped."""
    need = 0.0
    for b in doc.blocks:
        if b.kind == "row":
            need = max(need, _row_width(b, font_px))
        elif b.kind == "table":
            cols = _col_widths(b, font_px)
            need = max(need, sum(cols) + _gap(font_px) * (len(cols) - 1))
    return need


def margin(font_px: int, width: int) -> int:
    return max(6, round(1.5 * font_px), round(0.04 * width))


def wrap(text: str, size: int, width: float) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        cand = f"{cur} {w}" if cur else w
        if cur and text_width(cand, size) > width:
            lines.append(cur)
            cur = w
        else:
            cur = cand
    if cur:
        lines.append(cur)
    return lines


def _place_row(segs: tuple[Seg, ...], font_px: int, left: float, right: float) -> list[Item]:
    items: list[Item] = []
    x_left, x_right = left, right
    for s in segs:
        size = _size(font_px, s.scale)
        w = text_width(s.text, size)
        pad = _pad(s, font_px) / 2
        if s.align == "right":
            x = x_right - w - pad
            x_right = x - pad - _gap(font_px)
        elif s.align == "center":
            x = (left + right - w) / 2
        else:
            x = x_left + pad
            x_left = x + w + pad + _gap(font_px)
        items.append(Item(s.text, x, size, s.bold, s.box))
    return items


def layout(doc: Doc, font_px: int, width: int) -> tuple[list[PlacedRow], int]:
    """Place every block for a canvas `width` px wide; return rows and the height used."""
    m = margin(font_px, width)
    left, right = float(m), float(width - m)
    # a top bar (app header, slide title band) starts at the canvas edge, not below a margin
    y = font_px // 2 if doc.blocks and doc.blocks[0].band is not None else m
    rows: list[PlacedRow] = []

    def line(size: int) -> tuple[int, int]:
        return round(size * doc.line_spacing), round(size * (doc.line_spacing + 0.7) / 2)

    for b in doc.blocks:
        y += round(b.gap * font_px * doc.line_spacing)
        if b.kind == "row":
            items = _place_row(b.segs, font_px, left, right)
            size = max(i.size for i in items)
            h, base = line(size)
            if b.band is not None:
                h, base = h + font_px, base + font_px // 2
            rows.append(PlacedRow(y, h, y + base, tuple(items), band=b.band))
            y += h
        elif b.kind == "para":
            size = _size(font_px, b.scale)
            for text in wrap(b.text, size, right - left):
                h, base = line(size)
                rows.append(PlacedRow(y, h, y + base, (Item(text, left, size, False, None),)))
                y += h
        elif b.kind == "table":
            cols = _col_widths(b, font_px)
            spare = max(0.0, (right - left) - sum(cols)) / max(1, len(cols) - 1)
            spare = min(spare, 8.0 * font_px) if len(cols) > 1 else 0.0
            for r_i, cells in enumerate(b.cells):
                h, base = line(font_px)
                items, x = [], left
                for c, text in enumerate(cells):
                    cx = x + cols[c] - text_width(text, font_px) if b.numeric[c] else x
                    items.append(Item(text, cx, font_px, r_i == 0, None))
                    x += cols[c] + spare
                rows.append(PlacedRow(y, h, y + base, tuple(items), header=r_i == 0))
                y += h
        elif b.kind == "rule":
            rows.append(PlacedRow(y, font_px, y + font_px // 2, (), rule=True))
            y += font_px
    return rows, y + m


def draw(doc: Doc, rows: list[PlacedRow], size: tuple[int, int], font_px: int) -> Image.Image:
    th = doc.theme
    img = Image.new("RGB", size, th.background)
    d = ImageDraw.Draw(img)
    m = margin(font_px, size[0])
    for r in rows:
        if r.band is not None:
            top = 0 if r is rows[0] else r.top  # a top bar runs to the canvas edge
            d.rectangle((0, top, size[0], r.top + r.height), fill=r.band)
        if r.rule:
            d.line((m, r.baseline, size[0] - m, r.baseline), fill=th.muted, width=1)
        if r.header and th.grid:
            d.line((m, r.top + r.height, size[0] - m, r.top + r.height), fill=th.muted, width=1)
        for it in r.items:
            _draw_item(d, it, r, th, font_px)
    return img


def _draw_item(d: ImageDraw.ImageDraw, it: Item, r: PlacedRow, th, font_px: int) -> None:  # noqa: ANN001
    f = font(it.size)
    ink = th.on_accent if r.band is not None else th.ink
    if it.box:
        pad = 0.6 * font_px
        w = text_width(it.text, it.size)
        top, bottom = r.baseline - it.size * 0.95, r.baseline + it.size * 0.35
        rect = (it.x - pad, top, it.x + w + pad, bottom)
        if it.box == "button":
            d.rounded_rectangle(rect, radius=max(2, font_px // 3), fill=th.accent)
            ink = th.on_accent
        elif it.box == "pill":
            d.rounded_rectangle(rect, radius=max(2, font_px // 2), outline=th.accent, width=1)
        else:
            d.rectangle(rect, outline=th.muted, width=1)
    # No faux-bold stroke: it fills the dots of i/j and OCR then reads them as l.
    d.text((it.x, r.baseline), it.text, font=f, fill=ink, anchor="ls")


def render(doc: Doc, font_px: int, target: tuple[int, int]) -> Rendered:
    """Draw `doc` on a canvas at least `target` big, grown to fit its content (<= MAX_SIDE)."""
    width = max(target[0], round(needed_width(doc, font_px)) + 2 * margin(font_px, target[0]))
    rows, used = layout(doc, font_px, width)
    height = max(target[1], used)
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ValueError(f"page {width}x{height} exceeds {MAX_SIDE}px")
    img = draw(doc, rows, (width, height), font_px)
    lines = [r.text for r in rows if r.text.strip()]
    return Rendered(img, lines, rows)
