from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from router.config import load_config
from router.guardrails.config import GuardrailsConfig, resolve


def test_default_config_has_guardrails_off() -> None:
    cfg = load_config("examples/emulated.yaml")
    assert not resolve(cfg.guardrails).active()


@pytest.mark.parametrize(("path", "action"), [("examples/guardrails.yaml", "block"), ("examples/guardrails-redact.yaml", "redact")])
def test_examples_validate(path: str, action: str) -> None:
    cfg = load_config(path)
    settings = resolve(cfg.guardrails)
    assert settings.pii.action == action and settings.injection.action == action
    assert settings.faces.action == "off" and settings.nsfw.action == "off"


def test_bare_yaml_off_is_the_off_action() -> None:
    cfg = GuardrailsConfig.model_validate(yaml.safe_load("pii: {action: off}\nteams: {a: {pii: {action: off}}}"))
    assert cfg.pii.action == "off" and resolve(cfg, team="a").pii.action == "off"


def test_unknown_action_and_key_are_refused() -> None:
    with pytest.raises(ValidationError):
        GuardrailsConfig.model_validate({"pii": {"action": "maybe"}})
    with pytest.raises(ValidationError):
        GuardrailsConfig.model_validate({"ocr": {"action": "block"}})
