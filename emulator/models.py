"""The emulator's model table: upstream model name → token rule, vision profile, provider kind
and the detail levels the provider accepts.

The constants are the documented ones (``shared/reference/providers.md`` §1–§3). A gateway
configuration can override them by ``upstream`` name, so that the gateway's estimates and the
emulator's bills come from the same numbers::

    >>> table = load_catalog_overrides("examples/emulated.yaml")   # doctest: +SKIP
    >>> table["gpt-4o"].rule.base
    85
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from collector.semconv import ProviderKind
from router.tokens import TokenRule, rule_from_config

OPENAI_DETAILS = ("low", "high", "auto")
ANTHROPIC_DETAILS = ("auto",)
GEMINI_2_DETAILS = ("low", "medium", "high", "auto")
GEMINI_3_DETAILS = ("low", "medium", "high", "ultra_high", "auto")


@dataclass(frozen=True)
class ModelEntry:
    """What the emulator knows about one upstream model.

    ``profile`` names the vision profile (``emulator.vision.DEFAULT_PROFILES``); ``per_part_media``
    says whether Gemini parts may carry their own ``media_resolution`` (Gemini 3 only).
    """

    name: str
    provider: ProviderKind
    rule: TokenRule
    profile: str
    details: tuple[str, ...]
    per_part_media: bool = False


def _entry(name: str, provider: ProviderKind, rule: TokenRule, details: tuple[str, ...],
           per_part_media: bool = False) -> ModelEntry:
    return ModelEntry(name, provider, rule, name, details, per_part_media)


_CLAUDE_STD = TokenRule(algo="claude", max_edge=1568, max_tokens=1568)
_CLAUDE_HIGH_RES = TokenRule(algo="claude", max_edge=2576, max_tokens=4784)
# Gemini 2.5 is observed to bill a flat 258 per image; LOW media resolution ≈ 66 (64 + 2).
_GEMINI_25 = dict(algo="gemini_fixed", fixed_tokens=258, media_tokens={"low": 66}, media_view={"low": 384})

DEFAULT_MODELS: Mapping[str, ModelEntry] = {
    e.name: e
    for e in (
        _entry("gpt-4o", "openai", TokenRule(algo="tile", base=85, tile=170), OPENAI_DETAILS),
        _entry("gpt-4o-mini", "openai", TokenRule(algo="tile", base=2833, tile=5667), OPENAI_DETAILS),
        _entry("gpt-4.1", "openai", TokenRule(algo="tile", base=85, tile=170), OPENAI_DETAILS),
        _entry("gpt-4.1-mini", "openai", TokenRule(algo="patch", multiplier=1.62), OPENAI_DETAILS),
        _entry("gpt-4.1-nano", "openai", TokenRule(algo="patch", multiplier=2.46), OPENAI_DETAILS),
        _entry("o4-mini", "openai", TokenRule(algo="patch", multiplier=1.72), OPENAI_DETAILS),
        _entry("claude-sonnet-4-5", "anthropic", _CLAUDE_STD, ANTHROPIC_DETAILS),
        _entry("claude-haiku-4-5", "anthropic", _CLAUDE_STD, ANTHROPIC_DETAILS),
        _entry("claude-opus-4-7", "anthropic", _CLAUDE_HIGH_RES, ANTHROPIC_DETAILS),
        _entry("gemini-2.5-flash", "gemini", TokenRule(**_GEMINI_25, view_side=768), GEMINI_2_DETAILS),  # type: ignore[arg-type]
        _entry("gemini-2.5-pro", "gemini", TokenRule(**_GEMINI_25, view_side=1024), GEMINI_2_DETAILS),  # type: ignore[arg-type]
        _entry("gemini-3-flash", "gemini", TokenRule(algo="gemini_media", default_media="high"),
               GEMINI_3_DETAILS, per_part_media=True),
    )
}

_DETAILS_BY_KIND: dict[str, tuple[str, ...]] = {
    "openai": OPENAI_DETAILS, "anthropic": ANTHROPIC_DETAILS, "gemini": GEMINI_2_DETAILS,
}


def apply_overrides(base: Mapping[str, ModelEntry], config: Mapping[str, Any]) -> dict[str, ModelEntry]:
    """Merge a parsed gateway config's ``models:`` section into ``base``, keyed by ``upstream``.

    A model the table does not know is added with its provider's kind (from ``providers:``).
    Pure: the caller does the reading.
    """
    table = dict(base)
    providers = config.get("providers") or {}
    for model_id, spec in (config.get("models") or {}).items():
        if not isinstance(spec, Mapping):
            raise ValueError(f"model {model_id!r} must be a mapping")
        upstream = str(spec.get("upstream") or model_id)
        image = spec.get("image")
        known = table.get(upstream)
        provider_cfg = providers.get(spec.get("provider"), {}) if isinstance(providers, Mapping) else {}
        kind = (provider_cfg or {}).get("kind") or (known.provider if known else spec.get("provider"))
        if kind not in _DETAILS_BY_KIND:
            raise ValueError(f"model {model_id!r}: unknown provider kind {kind!r}")
        rule = rule_from_config(image) if isinstance(image, Mapping) else (known.rule if known else None)
        if rule is None:
            raise ValueError(f"model {model_id!r} has no image rule")
        if known is not None:
            table[upstream] = replace(known, rule=rule)
        else:
            details = tuple(spec.get("details") or _DETAILS_BY_KIND[kind])
            table[upstream] = ModelEntry(upstream, kind, rule, upstream, details)
    return table


def load_catalog_overrides(yaml_path: str | Path, base: Mapping[str, ModelEntry] | None = None) -> dict[str, ModelEntry]:
    """Read a gateway config with plain YAML (not ``router.config``) and return the model table
    with its ``models:`` rules applied over ``base`` (default :data:`DEFAULT_MODELS`)."""
    data = yaml.safe_load(Path(yaml_path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{yaml_path}: the configuration must be a mapping")
    return apply_overrides(DEFAULT_MODELS if base is None else base, data)


def build_model_table(catalog: str | Path | None = None) -> dict[str, ModelEntry]:
    """The default table, with a gateway catalog's overrides when one is given."""
    return load_catalog_overrides(catalog) if catalog else dict(DEFAULT_MODELS)
