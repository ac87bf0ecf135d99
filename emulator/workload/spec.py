"""The image kinds, their size/font/format ranges, and the default workload mix.

docs/workload.md mirrors these tables; change both together.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from emulator.workload import paper, screens
from emulator.workload.doc import Doc

Builder = Callable[[random.Random, int], Doc]


@dataclass(frozen=True)
class KindSpec:
    """Ranges one kind is drawn from. `long_side` is the target canvas long side in px (the
    canvas grows if the content needs more); `aspect` is width / height; `font_px` is the
    body font size; `clean` means no rotation, noise or texture."""

    builders: tuple[Builder, ...]
    long_side: tuple[int, int]
    aspect: tuple[float, float]
    font_px: tuple[int, int]
    clean: bool
    formats: dict[str, float]
    effect: str | None = None


DOC_FORMATS = {"png": 0.45, "jpeg": 0.3, "webp": 0.15, "heic": 0.1}
SCREEN_FORMATS = {"png": 0.7, "webp": 0.2, "jpeg": 0.1}
PHOTO_FORMATS = {"jpeg": 0.6, "heic": 0.3, "webp": 0.1}

KINDS: dict[str, KindSpec] = {
    "invoice": KindSpec((paper.invoice,), (800, 1700), (0.70, 0.80), (9, 20), True, DOC_FORMATS),
    "receipt": KindSpec((paper.receipt,), (600, 1400), (0.35, 0.55), (10, 18), True, DOC_FORMATS),
    "form": KindSpec((paper.form,), (800, 1600), (0.70, 0.80), (10, 20), True, DOC_FORMATS),
    "table": KindSpec((paper.report_table,), (700, 1600), (1.30, 1.60), (10, 18), True, DOC_FORMATS),
    "slide": KindSpec((screens.slide,), (400, 1920), (1.70, 1.80), (16, 32), True,
                      {"png": 0.5, "jpeg": 0.3, "webp": 0.2}),
    "ui_screenshot": KindSpec((screens.ui_screenshot,), (640, 1600), (1.30, 1.80), (11, 18), True,
                              SCREEN_FORMATS),
    "sign_photo": KindSpec((screens.sign,), (200, 900), (0.75, 1.50), (20, 40), False, PHOTO_FORMATS,
                           effect="sign"),
    "scan": KindSpec((paper.invoice, paper.form), (900, 1700), (0.70, 0.80), (10, 16), False,
                     {"jpeg": 0.5, "png": 0.3, "webp": 0.1, "heic": 0.1}, effect="scan"),
    "contract": KindSpec((paper.contract,), (1700, 2600), (0.70, 0.80), (8, 11), True, DOC_FORMATS),
    "screenshot_4k": KindSpec((screens.dashboard,), (3840, 4096), (1.70, 1.80), (11, 16), True,
                              {"png": 0.8, "webp": 0.2}),
}

DEFAULT_MIX: dict[str, float] = {
    "invoice": 0.16,
    "receipt": 0.12,
    "form": 0.10,
    "table": 0.10,
    "slide": 0.10,
    "ui_screenshot": 0.12,
    "sign_photo": 0.08,
    "scan": 0.08,
    "contract": 0.08,
    "screenshot_4k": 0.06,
}

TASK_MIX: dict[str, float] = {"transcribe": 0.45, "extract": 0.45, "describe": 0.10}

PROMPTS = {
    "transcribe": "Transcribe all the text in this image.",
    "describe": "Describe this image briefly.",
}


def check_mix(mix: dict[str, float]) -> dict[str, float]:
    """Validate a kind mix and normalise it to sum to 1."""
    unknown = sorted(set(mix) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown kinds in mix: {unknown}; known: {sorted(KINDS)}")
    if any(w < 0 for w in mix.values()):
        raise ValueError("mix weights must be >= 0")
    total = sum(mix.values())
    if total <= 0:
        raise ValueError("mix weights must sum to > 0")
    return {k: w / total for k, w in mix.items() if w > 0}


def parse_mix(text: str) -> dict[str, float]:
    """Read a CLI mix such as "invoice=2,receipt=1" (weights are normalised)."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, weight = part.partition("=")
        try:
            mix[name.strip()] = float(weight) if sep else 1.0
        except ValueError:
            raise ValueError(f"bad weight in mix entry {part!r}; expected kind=number") from None
    if not mix:
        raise ValueError("empty mix")
    return check_mix(mix)


def allocate(n: int, mix: dict[str, float]) -> list[str]:
    """Exact counts per kind by largest remainder, so small workloads still follow the mix."""
    raw = {k: n * w for k, w in mix.items()}
    counts = {k: int(v) for k, v in raw.items()}
    left = n - sum(counts.values())
    for k in sorted(raw, key=lambda k: (-(raw[k] - counts[k]), k))[:left]:
        counts[k] += 1
    return [k for k in mix for _ in range(counts[k])]


def weighted(rng: random.Random, weights: dict[str, float]) -> str:
    keys = sorted(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys], k=1)[0]
