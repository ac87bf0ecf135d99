"""Every worked example of shared/reference/providers.md, plus properties of the estimators."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.tokens import (
    TokenRule,
    claude_resized_size,
    cost_usd,
    effective_size,
    estimate_image_tokens,
    estimate_text_tokens,
    rule_from_config,
)

GPT4O = TokenRule("tile", base=85, tile=170)
GPT4O_MINI = TokenRule("tile", base=2833, tile=5667)
GPT5 = TokenRule("tile", base=70, tile=140)
O3 = TokenRule("tile", base=75, tile=150)


@pytest.mark.parametrize(
    ("size", "resized", "gpt4o", "mini", "gpt5", "o3"),
    [
        ((1024, 1024), (768, 768), 765, 25501, 630, 675),
        ((2048, 4096), (768, 1536), 1105, 36835, 910, 975),
        ((1920, 1080), (1365, 768), 1105, 36835, 910, 975),
        ((1800, 2400), (768, 1024), 765, 25501, 630, 675),
        ((512, 512), (512, 512), 255, 8500, 210, 225),
        ((513, 512), (513, 512), 425, 14167, 350, 375),
    ],
)
def test_openai_tile_worked_examples(size, resized, gpt4o, mini, gpt5, o3):
    assert effective_size(GPT4O, *size, "high") == resized
    assert estimate_image_tokens(GPT4O, *size, "high") == gpt4o
    assert estimate_image_tokens(GPT4O_MINI, *size, "high") == mini
    assert estimate_image_tokens(GPT5, *size, "high") == gpt5
    assert estimate_image_tokens(O3, *size, "high") == o3


def test_openai_low_is_flat_and_auto_is_high():
    assert estimate_image_tokens(GPT4O, 4096, 8192, "low") == 85
    assert estimate_image_tokens(GPT4O_MINI, 4096, 8192, "low") == 2833
    assert estimate_image_tokens(GPT4O, 1024, 1024, "auto") == 765
    assert estimate_image_tokens(GPT4O, 1024, 1024, None) == 765


def test_no_upscaling_on_small_images():
    # one-api measured 125×50 at 85 + 170 (providers.md §1.2)
    assert estimate_image_tokens(GPT4O, 125, 50, "high") == 255


@pytest.mark.parametrize(
    ("size", "resized", "patches", "x162", "x246", "x172"),
    [
        ((1024, 1024), (1024, 1024), 1024, 1659, 2520, 1762),
        ((1800, 2400), (1056, 1408), 1452, 2353, 3572, 2498),
        ((1920, 1080), (1649, 928), 1508, 2443, 3710, 2594),
        ((4000, 1474), (2048, 754), 1536, 2489, 3779, 2642),
        ((1600, 1600), (1247, 1247), 1521, 2465, 3742, 2617),
        ((512, 512), (512, 512), 256, 415, 630, 441),
    ],
)
def test_openai_patch_worked_examples(size, resized, patches, x162, x246, x172):
    assert effective_size(TokenRule("patch", multiplier=1.62), *size, "high") == resized
    assert estimate_image_tokens(TokenRule("patch", multiplier=1.0), *size, "high") == patches
    assert estimate_image_tokens(TokenRule("patch", multiplier=1.62), *size, "high") == x162
    assert estimate_image_tokens(TokenRule("patch", multiplier=2.46), *size, "high") == x246
    assert estimate_image_tokens(TokenRule("patch", multiplier=1.72), *size, "high") == x172


@pytest.mark.parametrize(
    ("size", "tokens"), [((256, 256), 77), ((512, 512), 308), ((768, 1024), 922), ((1024, 1024), 1229), ((2048, 768), 1844)]
)
def test_patch_measured_gpt5_mini_rounds_up(size, tokens):
    assert estimate_image_tokens(TokenRule("patch", multiplier=1.2), *size, "high") == tokens


def test_gpt54_high_patch_budget():
    rule = TokenRule("patch", patch_budget=2500, max_dim=2048, multiplier=1.0)
    assert estimate_image_tokens(rule, 1800, 2400, "high") == 2451
    assert effective_size(rule, 1800, 2400, "high") == (1368, 1824)
    assert estimate_image_tokens(rule, 3840, 2160, "high") == 2304


CLAUDE = TokenRule("claude", max_edge=1568, max_tokens=1568)
CLAUDE_HI = TokenRule("claude", max_edge=2576, max_tokens=4784)


@pytest.mark.parametrize(
    ("size", "legacy", "std_size", "std", "hi_size", "hi"),
    [
        ((200, 200), 54, (200, 200), 64, (200, 200), 64),
        ((1000, 1000), 1334, (1000, 1000), 1296, (1000, 1000), 1296),
        ((1092, 1092), 1590, (1092, 1092), 1521, (1092, 1092), 1521),
        ((1920, 1080), None, (1456, 819), 1560, (1920, 1080), 2691),
        ((2000, 1500), None, (1270, 952), 1564, (2000, 1500), 3888),
        ((3840, 2160), None, (1456, 819), 1560, (2576, 1449), 4784),
        ((1075, 1520), None, (924, 1307), 1551, (1075, 1520), 2145),
        ((8000, 8000), None, (1092, 1092), 1521, (1932, 1932), 4761),
    ],
)
def test_anthropic_worked_examples(size, legacy, std_size, std, hi_size, hi):
    if legacy is not None:
        assert estimate_image_tokens(TokenRule("claude_legacy"), *size) == legacy
    assert claude_resized_size(*size) == std_size
    assert estimate_image_tokens(CLAUDE, *size) == std
    assert effective_size(CLAUDE_HI, *size) == hi_size
    assert estimate_image_tokens(CLAUDE_HI, *size) == hi


@pytest.mark.parametrize(
    "size", [(1092, 1092), (951, 1268), (896, 1344), (819, 1456), (784, 1568)]
)
def test_claude_legacy_largest_unresized_sizes_fit_new_rule(size):
    assert effective_size(CLAUDE, *size) == size
    assert estimate_image_tokens(CLAUDE, *size) <= 1568


@pytest.mark.parametrize(
    ("size", "tokens"), [((384, 384), 258), ((512, 512), 1032), ((1024, 1024), 1032), ((1920, 1080), 1548), ((3840, 2160), 3870)]
)
def test_gemini_documented_tile_rule(size, tokens):
    assert estimate_image_tokens(TokenRule("gemini_tile"), *size) == tokens


def test_gemini_fixed_and_media_resolution():
    fixed = TokenRule("gemini_fixed", media_tokens={"low": 66})
    assert estimate_image_tokens(fixed, 3840, 2160) == 258
    assert estimate_image_tokens(fixed, 3840, 2160, "low") == 66
    media = TokenRule("gemini_media")
    assert [estimate_image_tokens(media, 64, 64, d) for d in ("low", "medium", "high", "ultra_high")] == [280, 560, 1120, 2240]
    assert estimate_image_tokens(media, 2048, 512, "auto") == 1120  # default for images is HIGH


RULES = [GPT4O, GPT4O_MINI, TokenRule("patch", multiplier=1.62), CLAUDE, CLAUDE_HI, TokenRule("claude_legacy"), TokenRule("gemini_tile")]
sizes = st.integers(min_value=1, max_value=12000)


@given(rule=st.sampled_from(RULES), w=sizes, h=sizes, grow=st.integers(min_value=0, max_value=3000))
def test_monotone_in_size(rule, w, h, grow):
    """Bigger images never cost less while the provider does not resize them. Once a provider
    resizes, its own algorithm is not monotone (Claude: 1040×1377 → 1564 tokens but 1041×1378 →
    1530; OpenAI tiles: 603×1025 → 1105 but 1262×1684, scaled to 768×1024, → 765). We port the
    providers exactly, so beyond the resize threshold the property is the cap, checked below."""
    for detail in ("low", "high"):
        small, big = (w, h), (w + grow, h + grow)
        if effective_size(rule, *big, detail) != big and not (rule.algo == "tile" and detail == "low"):
            continue
        if rule.algo == "gemini_tile" and grow:
            continue  # the crop size grows with the short side; only the ≤384 rule is monotone
        assert estimate_image_tokens(rule, *small, detail) <= estimate_image_tokens(rule, *big, detail)


@given(rule=st.sampled_from(RULES), w=sizes, h=sizes)
def test_caps_hold_and_never_below_base(rule, w, h):
    tokens = estimate_image_tokens(rule, w, h, "high")
    ew, eh = effective_size(rule, w, h, "high")
    assert ew <= w and eh <= h
    if rule.algo == "tile":
        assert tokens >= rule.base
        assert max(ew, eh) <= rule.max_dim and (min(ew, eh) <= rule.short_side or (ew, eh) == (w, h))
    elif rule.algo == "patch":
        assert 1 <= tokens <= -(-rule.patch_budget * rule.multiplier // 1)
        assert max(ew, eh) <= rule.max_dim
    elif rule.algo == "claude":
        assert 1 <= tokens <= rule.max_tokens
        assert max(ew, eh) <= rule.max_edge
    elif rule.algo == "claude_legacy":
        assert tokens <= rule.legacy_max_tokens + 1
    else:
        assert tokens >= rule.fixed_tokens


def test_text_tokens_and_cost():
    assert estimate_text_tokens("") == 0
    assert estimate_text_tokens("abcd" * 10) == 10
    assert cost_usd(1_000_000, 0, 2.5, 10) == pytest.approx(2.5)
    assert cost_usd(765, 100, 2.5, 10) == pytest.approx((765 * 2.5 + 100 * 10) / 1e6)


def test_rejects_empty_dimensions():
    with pytest.raises(ValueError):
        estimate_image_tokens(GPT4O, 0, 10)


def test_rule_from_config_is_the_one_conversion_for_gateway_and_emulator() -> None:
    from emulator.models import apply_overrides
    from router.config import ImageRuleConfig

    block = {"rule": "patch", "multiplier": 2.46, "max_dim": None}
    assert rule_from_config(block) == TokenRule("patch", multiplier=2.46)
    assert ImageRuleConfig.model_validate(block).to_rule() == rule_from_config(block)
    table = apply_overrides({}, {"providers": {"p": {"kind": "openai"}},
                                 "models": {"m": {"provider": "p", "image": block}}})
    assert table["m"].rule == rule_from_config(block)
    with pytest.raises(ValueError, match="needs a 'rule'"):
        rule_from_config({"base": 85})
