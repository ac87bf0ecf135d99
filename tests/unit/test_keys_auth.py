from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.config import AppConfig
from router.errors import AuthenticationFailed
from router.keys import (
    ANONYMOUS_KEY_ID,
    OPEN_TEAM,
    Principal,
    authenticate,
    bearer_token,
    key_id,
    open_mode_warning,
)

KEY = "ak-search-7f3e9b2c1d0a"


def _config(keys: dict[str, dict[str, object]] | None = None) -> AppConfig:
    return AppConfig(
        providers={"openai": {"kind": "openai", "base_url": "http://127.0.0.1:9"}},
        models={
            "gpt-4o": {
                "provider": "openai",
                "upstream": "gpt-4o",
                "price": {"input_per_mtok": 2.5, "output_per_mtok": 10},
                "image": {"rule": "tile"},
            }
        },
        virtual_keys=keys or {},
    )


KEYED = _config({KEY: {"team": "search", "rpm": 60, "tpm": 1000, "daily_budget_usd": 5.0}, "other-key-1": {"team": "ml"}})


def test_valid_key_gives_its_principal() -> None:
    p = authenticate(f"Bearer {KEY}", KEYED)
    assert p == Principal(key_id=key_id(KEY), team="search", rpm=60, tpm=1000, daily_budget_usd=5.0)
    assert p.key_id.startswith("vk_") and len(p.key_id) == 15 and KEY not in p.key_id
    assert authenticate("bearer   other-key-1 ", KEYED).team == "ml"


@pytest.mark.parametrize(
    "header",
    [None, "", "Bearer", "Bearer ", f"Basic {KEY}", f"Bearer {KEY}x", f"Bearer {KEY[:-1]}", KEY, "Bearer ak-wrong"],
)
def test_wrong_or_missing_key_is_401(header: str | None) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        authenticate(header, KEYED)
    err = info.value
    assert err.status == 401 and err.code == "invalid_api_key" and err.type == "authentication_error"
    text = err.message + json.dumps(err.body()) + repr(err)
    assert KEY not in text and "ak-wrong" not in text


@settings(deadline=None)
@given(st.text(min_size=1, max_size=40).filter(lambda s: s.strip() and s.strip() != KEY))
def test_no_other_token_is_accepted_and_none_is_echoed(token: str) -> None:
    with pytest.raises(AuthenticationFailed) as info:
        authenticate(f"Bearer {token}", KEYED)
    if len(token.strip()) >= 4:
        assert token.strip() not in info.value.message


def test_open_mode_accepts_anything_as_default_team() -> None:
    cfg = _config()
    assert cfg.open_mode
    anon = authenticate(None, cfg)
    assert anon.team == OPEN_TEAM and anon.key_id == ANONYMOUS_KEY_ID and anon.open_mode
    assert anon.rpm is None and anon.daily_budget_usd is None
    p = authenticate("Bearer whatever", cfg)
    assert p.team == OPEN_TEAM and p.key_id == key_id("whatever")
    assert authenticate("Basic xyz", cfg).key_id == ANONYMOUS_KEY_ID


def test_open_mode_warning_is_loud_and_actionable() -> None:
    text = open_mode_warning()
    assert "OPEN MODE" in text and "virtual_keys" in text


def test_bearer_token_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("BEARER abc ") == "abc"
    assert bearer_token("  ") is None
    with pytest.raises(AuthenticationFailed):
        bearer_token("Token abc")
