"""examples/providers.yaml: the real endpoints, keys only from the environment (never contacted)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from router.config import load_config
from router.providers import ADAPTERS, AdapterOptions

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com", "gemini": "generativelanguage.googleapis.com"}
KEYS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}
AUTH = {"openai": ("authorization", "Bearer sk-test-openai"), "anthropic": ("x-api-key", "sk-test-anthropic"),
        "gemini": ("x-goog-api-key", "sk-test-gemini")}


@pytest.fixture()
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for provider, var in KEYS.items():
        monkeypatch.setenv(var, f"sk-test-{provider}")


def test_providers_point_at_the_real_apis_with_env_keys(keys: None) -> None:
    cfg = load_config(EXAMPLES / "providers.yaml")
    assert set(cfg.providers) == set(HOSTS)
    for name, provider in cfg.providers.items():
        url = urlsplit(provider.base_url)
        assert url.scheme == "https" and url.hostname == HOSTS[provider.kind], provider.base_url
        assert provider.api_key_env == KEYS[provider.kind] and provider.api_key_default is None
        assert provider.api_key() == f"sk-test-{name}"


def test_no_key_in_the_environment_means_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in KEYS.values():
        monkeypatch.delenv(var, raising=False)
    cfg = load_config(EXAMPLES / "providers.yaml")
    assert all(p.api_key() is None for p in cfg.providers.values())


def test_same_catalog_as_the_emulator_example() -> None:
    real = yaml.safe_load((EXAMPLES / "providers.yaml").read_text())["models"]
    emulated = yaml.safe_load((EXAMPLES / "emulated.yaml").read_text())["models"]
    assert real == emulated


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"])
def test_requests_are_built_for_the_real_endpoint(keys: None, model: str) -> None:
    cfg = load_config(EXAMPLES / "providers.yaml")
    spec = cfg.models[model]
    provider = cfg.providers[spec.provider]
    adapter = ADAPTERS[provider.kind]
    body = {"model": spec.upstream, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    req = adapter.build_request(adapter.spec.with_base_url(provider.base_url), body, api_key=provider.api_key(),
                                stream=False, options=AdapterOptions())
    assert urlsplit(req.url).hostname == HOSTS[provider.kind]
    header, value = AUTH[provider.kind]
    assert req.headers[header] == value
