"""The admin key is accepted only as ``Authorization: Bearer <key>``, exactly."""

from __future__ import annotations

import pytest

from aperture.policies import admin_authorized

KEY = "adm-0123456789"


@pytest.mark.parametrize("header", [f"Bearer {KEY}", f"bearer {KEY}", f"BEARER {KEY}"])
def test_the_bearer_form_is_accepted(header: str) -> None:
    assert admin_authorized(header, KEY)


@pytest.mark.parametrize(
    "header",
    [None, "", KEY, f"Basic {KEY}", "Bearer ", "Bearer", f"Bearer {KEY}x", f"Bearer {KEY[:-1]}",
     f"Bearer  {KEY}", f"Bearer {KEY} ", f"Token {KEY}", f"{KEY} Bearer"],
)
def test_anything_else_is_refused(header: str | None) -> None:
    assert not admin_authorized(header, KEY)


@pytest.mark.parametrize("key", [None, ""])
def test_no_configured_key_refuses_everyone(key: str | None) -> None:
    assert not admin_authorized("Bearer ", key)
    assert not admin_authorized("Bearer x", key)
