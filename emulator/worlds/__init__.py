"""Named, versioned emulated worlds: how each model reads, beyond the pixels it is given.

A world is evidence, not a knob: each one states what it models (docs/worlds.md), and the
benchmarks measure the loop in it. Results in a world never change without its ``version``
changing, so ``name@version`` (shown by the emulator's health route and log) makes a run
reproducible.

    >>> get_world("pixels").key
    'pixels@1'
    >>> sorted(WORLDS)[:2]
    ['adversarial', 'flat']
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from emulator.vision import DEFAULT_PROFILES, VisionProfile, profile_for
from emulator.worlds.misreads import NO_MISREADS, Misreads

SMALL_MARKERS = ("mini", "nano", "flash", "haiku", "lite")
DEFAULT_WORLD = "pixels"


def provider_of(model: str) -> str:
    """The provider family of a model id (the emulator's catalog names)."""
    if model.startswith("gemini"):
        return "gemini"
    if model.startswith("claude"):
        return "anthropic"
    return "openai"


def tier_of(model: str) -> str:
    """``small`` for the cheap tiers (mini, nano, flash, haiku, lite), else ``flagship``."""
    return "small" if any(m in model for m in SMALL_MARKERS) else "flagship"


@dataclass(frozen=True)
class World:
    """``profiles``: the resolution each model reads at (``emulator.vision``); ``misreads``
    keyed ``provider/tier``, ``*/tier``, ``provider/*`` or ``*/*`` (most specific wins);
    ``read_side``: when set, every route reads the image at this long side whatever the
    provider's resize (a world where resolution does not matter)."""

    name: str
    version: int
    summary: str
    misreads: Mapping[str, Misreads] = field(default_factory=lambda: MappingProxyType({}))
    profiles: Mapping[str, VisionProfile] = field(default_factory=lambda: DEFAULT_PROFILES)
    read_side: int | None = None

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def profile(self, model: str) -> VisionProfile:
        return profile_for(model, dict(self.profiles))

    def misreads_for(self, model: str) -> Misreads:
        p, t = provider_of(model), tier_of(model)
        for key in (f"{p}/{t}", f"*/{t}", f"{p}/*", "*/*"):
            if key in self.misreads:
                return self.misreads[key]
        return NO_MISREADS

    def read_size(self, image_size: tuple[int, int], effective: tuple[int, int]) -> tuple[int, int]:
        """The size the OCR reads: the provider's effective size, unless the world fixes it."""
        if self.read_side is None:
            return effective
        w, h = image_size
        scale = min(1.0, self.read_side / max(w, h))
        return max(1, round(w * scale)), max(1, round(h * scale))


def _frozen(d: dict[str, float]) -> Mapping[str, float]:
    return MappingProxyType(d)


# Small tiers: errors start below 24 px line boxes (≈ 16 px type) and on pages of more than
# 30 lines; flagships only below 12 px boxes (≈ 8 px type), and mildly. See docs/worlds.md.
_SMALL_MISREAD = Misreads(small_px=24, drop_small=0.35, digit_small=0.4, dense_lines=30, drop_dense=0.3,
                          lookalike=0.15)
_FLAGSHIP_MISREAD = Misreads(small_px=12, drop_small=0.05, digit_small=0.05, lookalike=0.02)

WORLDS: dict[str, World] = {w.name: w for w in (
    World("pixels", 1, "Tiers differ only in the resolution they read at (the emulator's original world)."),
    World("small-models-misread", 1,
          "Cheap tiers drop lines and swap digits in small or dense text and confuse look-alike "
          "fields, even at high detail; flagships only at the smallest sizes.",
          MappingProxyType({"*/small": _SMALL_MISREAD, "*/flagship": _FLAGSHIP_MISREAD})),
    World("provider-strengths", 1,
          "Gemini models miss lines on receipts and app screens; OpenAI models miss lines on slides.",
          MappingProxyType({"gemini/*": Misreads(kinds=_frozen({"receipt": 0.3, "app screenshot": 0.3})),
                            "openai/*": Misreads(kinds=_frozen({"slide": 0.3}))})),
    World("flat", 1,
          "Every route reads every image equally well: the same pixels (long side 1536), no misreads.",
          profiles=MappingProxyType({}), read_side=1536),
    World("adversarial", 1,
          "As pixels, except that OpenAI's small tiers (gpt-4.1-mini, ...) miss half the lines of tabular reports.",
          MappingProxyType({"openai/small": Misreads(kinds=_frozen({"report": 0.5}))})),
)}


class UnknownWorldError(ValueError):
    """The world name is not in :data:`WORLDS`."""


def get_world(name: str | None) -> World:
    """The world called ``name`` (``None``: the default, ``pixels``)."""
    name = name or DEFAULT_WORLD
    if name not in WORLDS:
        raise UnknownWorldError(f"unknown world {name!r}; known: {', '.join(sorted(WORLDS))}")
    return WORLDS[name]


__all__ = ["DEFAULT_WORLD", "WORLDS", "UnknownWorldError", "World", "get_world", "provider_of", "tier_of"]
