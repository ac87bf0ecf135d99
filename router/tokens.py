"""Image-token estimation, pure and shared by the router, the emulator and the optimizer.

Every provider family is one algorithm over a :class:`TokenRule`; the per-model constants live
in the model catalog (configuration), never in branches here. The rules and their worked
examples are in ``shared/reference/providers.md``; ``tests/unit/test_tokens.py`` reproduces
every one of them.

Example::

    >>> rule = TokenRule(algo="tile", base=85, tile=170)
    >>> estimate_image_tokens(rule, 1024, 1024, "high")
    765
    >>> effective_size(rule, 1024, 1024, "low")
    (512, 512)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Algo = Literal["tile", "patch", "claude", "claude_legacy", "gemini_fixed", "gemini_tile", "gemini_media"]

# Detail names understood across providers. OpenAI uses low/high/auto; Gemini's media resolution
# maps to low/medium/high/ultra_high; "auto" always means "the provider's default".
DETAILS = ("low", "medium", "high", "ultra_high", "auto")

_DEFAULT_MEDIA_TOKENS = {"low": 280, "medium": 560, "high": 1120, "ultra_high": 2240}
_DEFAULT_MEDIA_VIEW = {"low": 512, "medium": 768, "high": 1536, "ultra_high": 3072}


@dataclass(frozen=True)
class TokenRule:
    """Constants of one model's image-token rule. Unused fields are ignored by other algorithms."""

    algo: Algo
    # OpenAI tile models (providers.md §1.2)
    base: int = 85
    tile: int = 170
    tile_size: int = 512
    max_dim: int = 2048
    short_side: int = 768
    low_size: int = 512
    # OpenAI patch models (§1.3)
    patch_size: int = 32
    patch_budget: int = 1536
    multiplier: float = 1.62
    low_mode: Literal["fit512", "high"] = "fit512"
    # Anthropic (§2.1, §2.2)
    claude_patch: int = 28
    max_edge: int = 1568
    max_tokens: int = 1568
    legacy_divisor: int = 750
    legacy_max_tokens: int = 1600
    # Gemini (§3.1)
    fixed_tokens: int = 258
    small_max: int = 384
    tile_mode: Literal["crop15", "plain768"] = "crop15"
    view_side: int = 768
    media_tokens: dict[str, int] = field(default_factory=lambda: dict(_DEFAULT_MEDIA_TOKENS))
    media_view: dict[str, int] = field(default_factory=lambda: dict(_DEFAULT_MEDIA_VIEW))
    default_media: str = "high"

    def __hash__(self) -> int:  # dict fields would make the default hash fail
        return hash((self.algo, self.base, self.tile, self.multiplier, self.max_edge, self.max_tokens))


def rule_from_config(image: Mapping[str, Any]) -> TokenRule:
    """A configuration ``image:`` block (``{rule: tile, base: 85, ...}``) as a :class:`TokenRule`.

    The one conversion from configuration to token math: the gateway's validated config and the
    emulator's plain-YAML catalog overrides both go through it, so their estimates and bills
    agree. Keys whose value is ``None`` keep the rule's defaults.

    >>> rule_from_config({"rule": "tile", "base": 85, "tile": 170, "max_dim": None}).max_dim
    2048
    """
    if "rule" not in image:
        raise ValueError("an image block needs a 'rule'")
    values = {k: v for k, v in image.items() if k != "rule" and v is not None}
    return TokenRule(algo=image["rule"], **values)


def fit_within(width: int, height: int, max_w: int, max_h: int) -> tuple[int, int]:
    """Shrink (never enlarge) to fit in ``max_w × max_h`` keeping the aspect ratio; floors to pixels."""
    if width <= max_w and height <= max_h:
        return width, height
    scale = min(max_w / width, max_h / height)
    return max(1, int(width * scale)), max(1, int(height * scale))


def _tile_high_size(rule: TokenRule, width: int, height: int) -> tuple[int, int]:
    w, h = fit_within(width, height, rule.max_dim, rule.max_dim)
    shortest = min(w, h)
    if shortest > rule.short_side:  # step 2 only shrinks (no upscaling, providers.md §1.2)
        scale = rule.short_side / shortest
        w, h = max(1, int(w * scale)), max(1, int(h * scale))
    return w, h


def _patch_size(rule: TokenRule, width: int, height: int) -> tuple[int, int]:
    p = rule.patch_size
    w, h = fit_within(width, height, rule.max_dim, rule.max_dim)
    if math.ceil(w / p) * math.ceil(h / p) <= rule.patch_budget:
        return w, h
    shrink = math.sqrt(p * p * rule.patch_budget / (w * h))
    fw, fh = w * shrink / p, h * shrink / p
    adjusted = shrink * min(math.floor(fw) / fw, math.floor(fh) / fh)
    return max(1, int(w * adjusted)), max(1, int(h * adjusted))


def _patch_count(rule: TokenRule, w: int, h: int) -> int:
    p = rule.patch_size
    return min(math.ceil(w / p) * math.ceil(h / p), rule.patch_budget)


def claude_resized_size(width: int, height: int, max_edge: int = 1568, max_tokens: int = 1568, patch: int = 28) -> tuple[int, int]:
    """Anthropic's "largest aspect-preserving size that satisfies both limits" (providers.md §2.1).

    Ported exactly, including Python's half-to-even ``round`` for the short side.
    """

    def fits(w: int, h: int) -> bool:
        return (
            math.ceil(w / patch) * patch <= max_edge
            and math.ceil(h / patch) * patch <= max_edge
            and math.ceil(w / patch) * math.ceil(h / patch) <= max_tokens
        )

    if fits(width, height):
        return width, height
    if height > width:
        rh, rw = claude_resized_size(height, width, max_edge, max_tokens, patch)
        return rw, rh
    aspect = width / height
    lo, hi = 1, width
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid, max(round(mid / aspect), 1)):
            lo = mid
        else:
            hi = mid - 1
    return lo, max(round(lo / aspect), 1)


def _claude_legacy_size(rule: TokenRule, width: int, height: int) -> tuple[int, int]:
    w, h = fit_within(width, height, rule.max_edge, rule.max_edge)
    max_pixels = rule.legacy_max_tokens * rule.legacy_divisor
    if w * h > max_pixels:
        scale = math.sqrt(max_pixels / (w * h))
        w, h = max(1, int(w * scale)), max(1, int(h * scale))
    return w, h


def normalize_detail(rule: TokenRule, detail: str | None) -> str:
    """The detail the provider will actually apply. OpenAI ``auto`` is estimated as ``high``
    (providers.md §1.2: estimating it as low under-counts); Gemini ``auto`` is its default level."""
    d = (detail or "auto").lower()
    if rule.algo in ("tile", "patch"):
        return "low" if d == "low" else "high"
    if rule.algo in ("gemini_media", "gemini_fixed"):
        if d in ("auto", "") or d not in rule.media_tokens:
            return rule.default_media if rule.algo == "gemini_media" else "auto"
        return d
    return "auto"


def effective_size(rule: TokenRule, width: int, height: int, detail: str | None = "auto") -> tuple[int, int]:
    """The pixel size the model works at for this image and detail (what the emulator shows its
    OCR model). Token counts follow from it for the grid-based rules."""
    if width <= 0 or height <= 0:
        raise ValueError("image dimensions must be positive")
    d = normalize_detail(rule, detail)
    if rule.algo == "tile":
        if d == "low":
            return fit_within(width, height, rule.low_size, rule.low_size)
        return _tile_high_size(rule, width, height)
    if rule.algo == "patch":
        if d == "low" and rule.low_mode == "fit512":
            return fit_within(width, height, rule.low_size, rule.low_size)
        return _patch_size(rule, width, height)
    if rule.algo == "claude":
        return claude_resized_size(width, height, rule.max_edge, rule.max_tokens, rule.claude_patch)
    if rule.algo == "claude_legacy":
        return _claude_legacy_size(rule, width, height)
    if rule.algo == "gemini_fixed":
        side = rule.media_view.get(d, rule.view_side) if d != "auto" else rule.view_side
        return fit_within(width, height, side, side)
    if rule.algo == "gemini_tile":
        return fit_within(width, height, 3072, 3072)
    if rule.algo == "gemini_media":
        side = rule.media_view.get(d, rule.media_view.get(rule.default_media, 1536))
        return fit_within(width, height, side, side)
    raise ValueError(f"unknown token algorithm {rule.algo!r}")


def estimate_image_tokens(rule: TokenRule, width: int, height: int, detail: str | None = "auto") -> int:
    """Input tokens one image costs on a model with ``rule`` at ``detail`` (before text tokens)."""
    if width <= 0 or height <= 0:
        raise ValueError("image dimensions must be positive")
    d = normalize_detail(rule, detail)
    if rule.algo == "tile":
        if d == "low":
            return rule.base
        w, h = _tile_high_size(rule, width, height)
        return rule.base + rule.tile * math.ceil(w / rule.tile_size) * math.ceil(h / rule.tile_size)
    if rule.algo == "patch":
        w, h = effective_size(rule, width, height, d)
        return math.ceil(_patch_count(rule, w, h) * rule.multiplier)
    if rule.algo == "claude":
        w, h = claude_resized_size(width, height, rule.max_edge, rule.max_tokens, rule.claude_patch)
        return math.ceil(w / rule.claude_patch) * math.ceil(h / rule.claude_patch)
    if rule.algo == "claude_legacy":
        w, h = _claude_legacy_size(rule, width, height)
        return math.ceil(w * h / rule.legacy_divisor)
    if rule.algo == "gemini_fixed":
        return rule.media_tokens.get(d, rule.fixed_tokens) if d != "auto" else rule.fixed_tokens
    if rule.algo == "gemini_tile":
        if width <= rule.small_max and height <= rule.small_max:
            return rule.fixed_tokens
        if rule.tile_mode == "plain768":
            return rule.fixed_tokens * math.ceil(width / 768) * math.ceil(height / 768)
        crop = min(max(math.floor(min(width, height) / 1.5), 256), 768)
        return rule.fixed_tokens * math.ceil(width / crop) * math.ceil(height / crop)
    if rule.algo == "gemini_media":
        return rule.media_tokens.get(d, rule.media_tokens.get(rule.default_media, 1120))
    raise ValueError(f"unknown token algorithm {rule.algo!r}")


def estimate_text_tokens(text: str) -> int:
    """A provider-neutral text estimate (≈4 characters a token). Only used where the provider's
    own count is not available yet; billed usage always wins afterwards."""
    return math.ceil(len(text) / 4) if text else 0


MESSAGE_OVERHEAD_TOKENS = 4


def cost_usd(input_tokens: float, output_tokens: float, input_per_mtok: float, output_per_mtok: float) -> float:
    """Price of a call from token counts and per-million prices."""
    return (input_tokens * input_per_mtok + output_tokens * output_per_mtok) / 1_000_000


def cached_cost_usd(
    *,
    input_tokens: float,
    output_tokens: float,
    cached_tokens: float,
    cache_write_tokens: float,
    input_per_mtok: float,
    output_per_mtok: float,
    cached_per_mtok: float | None = None,
    cache_write_per_mtok: float | None = None,
) -> float:
    """Price of a call whose prompt was partly read from (or written to) the provider's cache.

    ``input_tokens`` is the whole prompt, cached parts included, as the adapters report it; the
    cached and cache-written parts are billed at their own prices (the full input price when a
    price is unknown), the rest at the input price. Counts that claim more than the prompt are
    clipped, so a bad usage report can never make the cost negative.
    """
    total = max(input_tokens, 0.0)
    cached = min(max(cached_tokens, 0.0), total)
    written = min(max(cache_write_tokens, 0.0), total - cached)
    plain = total - cached - written
    cached_price = input_per_mtok if cached_per_mtok is None else cached_per_mtok
    write_price = input_per_mtok if cache_write_per_mtok is None else cache_write_per_mtok
    prompt = plain * input_per_mtok + cached * cached_price + written * write_price
    return (prompt + max(output_tokens, 0.0) * output_per_mtok) / 1_000_000
