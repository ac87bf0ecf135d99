from __future__ import annotations

from pathlib import Path

import pytest

from emulator.models import (
    DEFAULT_MODELS,
    apply_overrides,
    build_model_table,
    load_catalog_overrides,
)
from router.tokens import estimate_image_tokens

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "emulated.yaml"


@pytest.mark.parametrize(
    ("model", "size", "detail", "tokens"),
    [
        ("gpt-4o", (1024, 1024), "high", 765),  # providers.md §1.4
        ("gpt-4o", (2048, 4096), "high", 1105),
        ("gpt-4o", (4096, 8192), "low", 85),
        ("gpt-4o-mini", (1024, 1024), "high", 25501),
        ("gpt-4.1", (1920, 1080), "auto", 1105),
        ("gpt-4.1-mini", (1800, 2400), "high", 2353),
        ("gpt-4.1-nano", (1024, 1024), "high", 2520),
        ("o4-mini", (4000, 1474), "high", 2642),
        ("claude-sonnet-4-5", (1920, 1080), "auto", 1560),  # §2.3
        ("claude-haiku-4-5", (200, 200), "auto", 64),
        ("claude-opus-4-7", (3840, 2160), "auto", 4784),
        ("gemini-2.5-flash", (3840, 2160), "auto", 258),  # §3.1 observed flat
        ("gemini-2.5-pro", (1024, 1024), "low", 66),
        ("gemini-3-flash", (64, 64), "auto", 1120),
        ("gemini-3-flash", (64, 64), "ultra_high", 2240),
    ],
)
def test_documented_constants(model: str, size: tuple[int, int], detail: str, tokens: int) -> None:
    entry = DEFAULT_MODELS[model]
    assert estimate_image_tokens(entry.rule, *size, detail) == tokens


def test_provider_kinds_and_details() -> None:
    assert {m.provider for m in DEFAULT_MODELS.values()} == {"openai", "anthropic", "gemini"}
    assert DEFAULT_MODELS["gpt-4o"].details == ("low", "high", "auto")
    assert DEFAULT_MODELS["claude-sonnet-4-5"].details == ("auto",)
    assert DEFAULT_MODELS["gemini-3-flash"].per_part_media
    assert not DEFAULT_MODELS["gemini-2.5-flash"].per_part_media
    assert all(m.profile == name for name, m in DEFAULT_MODELS.items())


def test_example_catalog_agrees_with_table() -> None:
    table = load_catalog_overrides(EXAMPLE)
    for name in ("gpt-4o", "gpt-4.1-mini", "claude-sonnet-4-5", "gemini-2.5-flash"):
        assert estimate_image_tokens(table[name].rule, 1920, 1080, "high") == \
            estimate_image_tokens(DEFAULT_MODELS[name].rule, 1920, 1080, "high")


def test_overrides_replace_rule_by_upstream_and_add_models(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.yaml"
    cfg.write_text(
        "providers:\n  oa: {kind: openai, base_url: 'http://127.0.0.1:1'}\n"
        "models:\n"
        "  cheap:\n    provider: oa\n    upstream: gpt-4o\n    image: {rule: tile, base: 10, tile: 20}\n"
        "  newbie:\n    provider: oa\n    upstream: gpt-9\n    image: {rule: patch, multiplier: 1.2}\n",
        encoding="utf-8",
    )
    table = load_catalog_overrides(cfg)
    assert estimate_image_tokens(table["gpt-4o"].rule, 512, 512, "high") == 30
    assert table["gpt-4o"].details == ("low", "high", "auto")
    assert table["gpt-9"].provider == "openai"
    assert estimate_image_tokens(table["gpt-9"].rule, 256, 256, "high") == 77
    # the built-in table is untouched
    assert estimate_image_tokens(DEFAULT_MODELS["gpt-4o"].rule, 512, 512, "high") == 255


@pytest.mark.parametrize(
    "config",
    [
        {"models": {"x": "not a mapping"}},
        {"models": {"x": {"provider": "nowhere", "upstream": "x", "image": {"rule": "tile"}}}},
        {"models": {"x": {"provider": "openai", "upstream": "new-model"}}},
        {"models": {"x": {"provider": "openai", "upstream": "gpt-4o", "image": {"base": 3}}}},
    ],
)
def test_bad_overrides_are_refused(config: dict) -> None:
    with pytest.raises(ValueError):
        apply_overrides(DEFAULT_MODELS, config)


def test_build_without_catalog_is_the_default_table() -> None:
    assert build_model_table(None).keys() == DEFAULT_MODELS.keys()
