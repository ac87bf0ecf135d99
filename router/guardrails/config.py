"""The ``guardrails:`` config section and the resolution of which settings apply to a request.

Each detector has an action, a threshold, a failure policy and a timeout. Overrides per team,
per virtual key and per rule id are applied in that order (the most specific, the rule, wins),
so an operator can turn a detector to ``block`` for one team while it stays ``shadow`` elsewhere.
Default: every detector ``off``, so a config without the section behaves exactly as before.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Action = Literal["off", "shadow", "flag", "block", "redact"]
OnError = Literal["open", "closed"]
DetectorName = Literal["pii", "faces", "nsfw", "injection"]
DETECTORS: tuple[DetectorName, ...] = ("pii", "faces", "nsfw", "injection")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("action", mode="before", check_fields=False)
    @classmethod
    def _yaml_off(cls, value: object) -> object:
        """YAML 1.1 reads a bare ``off`` as ``False``; take it as the action ``off``."""
        return "off" if value is False else value


class DetectorSettings(_Strict):
    """Settings of one detector. ``threshold`` is the score at or above which it fires."""

    action: Action = "off"
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    on_error: OnError = "open"
    timeout_ms: int = Field(default=500, gt=0)


class DetectorOverride(_Strict):
    """A partial :class:`DetectorSettings`: only the fields given replace the base ones."""

    action: Action | None = None
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    on_error: OnError | None = None
    timeout_ms: int | None = Field(default=None, gt=0)


class GuardrailOverride(_Strict):
    pii: DetectorOverride | None = None
    faces: DetectorOverride | None = None
    nsfw: DetectorOverride | None = None
    injection: DetectorOverride | None = None


class GuardrailSettings(_Strict):
    """The effective settings for one request: one :class:`DetectorSettings` per detector."""

    pii: DetectorSettings = Field(default_factory=DetectorSettings)
    faces: DetectorSettings = Field(default_factory=DetectorSettings)
    nsfw: DetectorSettings = Field(default_factory=DetectorSettings)
    injection: DetectorSettings = Field(default_factory=DetectorSettings)

    def detector(self, name: DetectorName) -> DetectorSettings:
        settings: DetectorSettings = getattr(self, name)
        return settings

    def active(self) -> bool:
        return any(self.detector(name).action != "off" for name in DETECTORS)


class GuardrailsConfig(GuardrailSettings):
    """The ``guardrails:`` section: base settings plus overrides and the pre-check cache size."""

    teams: dict[str, GuardrailOverride] = Field(default_factory=dict)
    virtual_keys: dict[str, GuardrailOverride] = Field(default_factory=dict)
    rules: dict[str, GuardrailOverride] = Field(default_factory=dict)
    cache_size: int = Field(default=4096, ge=0)

    def active_anywhere(self, detector: DetectorName | None = None) -> bool:
        """Some detector (or ``detector``) is on in the base settings or in an override (else the
        stage is skipped, or that detector's model is never loaded)."""
        names = DETECTORS if detector is None else (detector,)
        if any(self.detector(name).action != "off" for name in names):
            return True
        overrides = [*self.teams.values(), *self.virtual_keys.values(), *self.rules.values()]
        return any(
            o is not None and o.action not in (None, "off")
            for layer in overrides for o in (getattr(layer, name) for name in names)
        )


def _apply(base: DetectorSettings, override: DetectorOverride | None) -> DetectorSettings:
    if override is None:
        return base
    changes = override.model_dump(exclude_none=True)
    return base.model_copy(update=changes)


def resolve(
    config: GuardrailsConfig,
    *,
    team: str | None = None,
    virtual_key: str | None = None,
    rule_id: str | None = None,
) -> GuardrailSettings:
    """The settings for a request: base, then team, then virtual key, then rule overrides.

    The virtual key is the key's name in ``virtual_keys`` (never the secret). Unknown names
    simply contribute nothing.
    """
    layers: list[GuardrailOverride] = []
    for table, name in ((config.teams, team), (config.virtual_keys, virtual_key), (config.rules, rule_id)):
        if name is not None and name in table:
            layers.append(table[name])
    values: dict[str, DetectorSettings] = {}
    for det in DETECTORS:
        current = config.detector(det)
        for layer in layers:
            current = _apply(current, getattr(layer, det))
        values[det] = current
    return GuardrailSettings(**values)
