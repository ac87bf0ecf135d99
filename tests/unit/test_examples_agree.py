"""Every emulated example is examples/emulated.yaml plus its own sections: the providers and the
model catalog (prices included) cannot drift apart between them."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", ["autopilot", "loop", "replicas", "guardrails", "guardrails-redact"])
def test_an_emulated_example_has_the_emulated_catalog(name: str) -> None:
    emulated = load_config(EXAMPLES / "emulated.yaml", environ={})
    example = load_config(EXAMPLES / f"{name}.yaml", environ={})
    assert example.providers == emulated.providers
    assert example.models == emulated.models
