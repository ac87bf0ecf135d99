"""The cache key is exact and pure: same question → same key, any change that matters → new key."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.cache.key import ANSWER_PARAMS, cache_key, canonical_messages, image_digest, key_team

texts = st.text(max_size=40)
blobs = st.binary(min_size=1, max_size=64)


def _body(prompt: str, url: str, detail: str | None = "high", **params: Any) -> dict[str, Any]:
    image: dict[str, Any] = {"url": url}
    if detail is not None:
        image["detail"] = detail
    return {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "You read receipts."},
            {"role": "user", "content": [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": image}]},
        ],
        **params,
    }


@settings(max_examples=60, deadline=None)
@given(prompt=texts, data=blobs, host=st.sampled_from(["a.example", "cdn.example.org"]))
def test_base64_and_a_url_of_the_same_bytes_give_one_key(prompt: str, data: bytes, host: str) -> None:
    inline = _body(prompt, "data:image/png;base64," + base64.b64encode(data).decode())
    remote = _body(prompt, f"https://{host}/img/{len(data)}.png")
    digest = image_digest(data)
    assert cache_key(inline, [digest], route="gpt-4o:high", team="a") == cache_key(
        remote, [digest], route="gpt-4o:high", team="a"
    )


@settings(max_examples=60, deadline=None)
@given(prompt=texts, a=blobs, b=blobs)
def test_different_image_bytes_give_different_keys(prompt: str, a: bytes, b: bytes) -> None:
    body = _body(prompt, "https://x.example/i.png")
    same = cache_key(body, [image_digest(a)], route="r", team="t") == cache_key(body, [image_digest(b)], route="r", team="t")
    assert same == (a == b)


@settings(max_examples=40, deadline=None)
@given(prompt=texts, other=texts)
def test_prompt_route_team_detail_and_params_are_in_the_key(prompt: str, other: str) -> None:
    d = image_digest(b"img")
    base = cache_key(_body(prompt, "u"), [d], route="gpt-4o:high", team="a")
    assert (cache_key(_body(other, "u"), [d], route="gpt-4o:high", team="a") == base) == (prompt == other)
    assert cache_key(_body(prompt, "u"), [d], route="gpt-4o:low", team="a") != base
    assert cache_key(_body(prompt, "u"), [d], route="gpt-4o:high", team="b") != base
    assert cache_key(_body(prompt, "u"), [d], route="gpt-4o:high", team=None) != base
    assert cache_key(_body(prompt, "u", detail="low"), [d], route="gpt-4o:high", team="a") != base
    for name, value in (("temperature", 0.7), ("seed", 3), ("max_tokens", 17), ("response_format", {"type": "json_object"}),
                        ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}])):
        assert name in ANSWER_PARAMS
        assert cache_key(_body(prompt, "u", **{name: value}), [d], route="gpt-4o:high", team="a") != base


def test_what_does_not_change_the_answer_is_left_out() -> None:
    d = image_digest(b"img")
    base = cache_key(_body("p", "u"), [d], route="r", team="t")
    for extra in ({"stream": True, "stream_options": {"include_usage": True}}, {"user": "u1"},
                  {"metadata": {"task": "ocr"}}, {"model": "gpt-4o"}, {"temperature": None}):
        assert cache_key({**_body("p", "u"), **extra}, [d], route="r", team="t") == base


def test_pure_and_does_not_touch_its_input() -> None:
    body = _body("p", "data:image/png;base64,AAAA")
    before = copy.deepcopy(body)
    keys = {cache_key(body, ["ab" * 32], route="r", team="t") for _ in range(3)}
    assert len(keys) == 1 and body == before
    assert next(iter(keys)).startswith("v1:")


def test_digest_count_must_match_the_image_parts() -> None:
    with pytest.raises(ValueError):
        canonical_messages(_body("p", "u")["messages"], [])
    with pytest.raises(ValueError):
        canonical_messages(_body("p", "u")["messages"], ["a", "b"])


def test_key_team_is_none_only_when_shared() -> None:
    assert key_team("a", False) == "a" and key_team("a", True) is None
