from __future__ import annotations

import pytest
from pydantic import ValidationError

from router.config import expand_env, load_config, parse_config


def test_example_config_loads_with_emulator_default(monkeypatch):
    monkeypatch.delenv("APERTURE_EMULATOR_URL", raising=False)
    cfg = load_config("examples/emulated.yaml")
    assert {p.base_url for p in cfg.providers.values()} == {"http://127.0.0.1:9100"}
    assert cfg.open_mode
    assert cfg.ssrf.allow_networks == []
    for needed in ("gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "claude-sonnet-4-5", "claude-haiku-4-5", "gemini-2.5-flash", "gemini-2.5-pro"):
        assert needed in cfg.models
    assert cfg.models["gpt-4o"].id == "gpt-4o"


def test_env_url_and_nested_overrides(monkeypatch):
    monkeypatch.setenv("APERTURE_EMULATOR_URL", "http://127.0.0.1:9999")
    monkeypatch.setenv("APERTURE_TELEMETRY__CAPTURE_CONTENT", "true")
    cfg = load_config("examples/emulated.yaml")
    assert cfg.providers["anthropic"].base_url == "http://127.0.0.1:9999"
    assert cfg.telemetry.capture_content is True


def test_null_in_the_environment_switches_a_limit_off(monkeypatch):
    assert load_config("examples/emulated.yaml").autopilot.max_canary_s == 7 * 24 * 3600
    monkeypatch.setenv("APERTURE_AUTOPILOT__MAX_CANARY_S", "null")
    assert load_config("examples/emulated.yaml").autopilot.max_canary_s is None
    monkeypatch.setenv("APERTURE_AUTOPILOT__MAX_CANARY_S", "3600")
    assert load_config("examples/emulated.yaml").autopilot.max_canary_s == 3600


def test_expand_env_requires_variables():
    assert expand_env("${A:-x}/${B}", {"B": "y"}) == "x/y"
    with pytest.raises(ValueError):
        expand_env("${MISSING}", {})


def test_bad_configs_are_refused():
    base = "providers: {p: {kind: openai, base_url: 'http://x'}}\n"
    model = "models: {m: {provider: %s, upstream: m, price: {input_per_mtok: 1, output_per_mtok: 1}, image: {rule: tile}}}\n"
    with pytest.raises(ValidationError):
        parse_config(base + model % "nope" + "routing: {default_model: m}\n")
    with pytest.raises(ValidationError):
        parse_config(base + model % "p" + "routing: {default_model: other}\n")
    with pytest.raises(ValidationError):
        parse_config("providers: {p: {kind: azure, base_url: x}}\nmodels: {}\n")
    assert parse_config(base + model % "p" + "routing: {default_model: m}\n").models["m"].token_rule().algo == "tile"


def test_upstream_engine_is_chosen_in_config_and_checked(monkeypatch):
    from router.app import build_app

    cfg = load_config("examples/emulated.yaml")
    assert cfg.upstream.engine == "aiohttp"
    monkeypatch.setenv("APERTURE_UPSTREAM__ENGINE", "httpcore")
    cfg = load_config("examples/emulated.yaml")
    assert cfg.upstream.engine == "httpcore"
    app = build_app(cfg, snapshot=lambda: None)  # type: ignore[arg-type,return-value]  # never asked: no request
    assert app.state.gateway.client.pools == 16  # httpcore: 256 connections in pools of 16
    monkeypatch.setenv("APERTURE_UPSTREAM__ENGINE", "curl")
    with pytest.raises(ValidationError):
        load_config("examples/emulated.yaml")
