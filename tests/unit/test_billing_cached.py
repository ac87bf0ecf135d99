"""Cached input tokens billed at the cached price, from each provider's own usage report."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.billing import billed_cost_usd
from router.config import Price
from router.providers import ADAPTERS
from router.tokens import cached_cost_usd, cost_usd

PRICE = Price(input_per_mtok=3.0, output_per_mtok=15.0, cached_input_per_mtok=0.30, cache_write_per_mtok=3.75)


def _usage(provider: str, body: dict) -> object:
    adapter = ADAPTERS[provider]
    return adapter.parse_response(adapter.spec, 200, {}, json.dumps(body).encode(), request_model="m").usage


OPENAI = {"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o",
          "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 2000, "completion_tokens": 100, "total_tokens": 2100,
                    "prompt_tokens_details": {"cached_tokens": 1500}}}
ANTHROPIC = {"id": "m", "model": "claude", "stop_reason": "end_turn", "content": [{"type": "text", "text": "hi"}],
             "usage": {"input_tokens": 300, "cache_read_input_tokens": 1500, "cache_creation_input_tokens": 200,
                       "output_tokens": 100}}
GEMINI = {"candidates": [{"content": {"parts": [{"text": "hi"}], "role": "model"}, "finishReason": "STOP", "index": 0}],
          "usageMetadata": {"promptTokenCount": 2000, "cachedContentTokenCount": 1500, "candidatesTokenCount": 100}}


@pytest.mark.parametrize(("provider", "body", "written"), [("openai", OPENAI, 0), ("anthropic", ANTHROPIC, 200),
                                                           ("gemini", GEMINI, 0)])
def test_each_providers_cached_tokens_get_the_cached_price(provider: str, body: dict, written: int) -> None:
    usage = _usage(provider, body)
    plain = 2000 - 1500 - written
    expected = (plain * 3.0 + 1500 * 0.30 + written * 3.75 + 100 * 15.0) / 1_000_000
    assert billed_cost_usd(usage, PRICE) == pytest.approx(expected)  # type: ignore[arg-type]
    assert billed_cost_usd(usage, PRICE) < cost_usd(2000, 100, 3.0, 15.0) or written  # type: ignore[arg-type]


def test_unknown_cached_price_is_the_full_price() -> None:
    usage = _usage("openai", OPENAI)
    price = Price(input_per_mtok=2.5, output_per_mtok=10.0)
    assert billed_cost_usd(usage, price) == pytest.approx(cost_usd(2000, 100, 2.5, 10.0))  # type: ignore[arg-type]


_n = st.integers(min_value=0, max_value=10**7)
_p = st.floats(min_value=0, max_value=100, allow_nan=False)


@given(_n, _n, _n, _n, _p, _p, _p)
def test_cost_is_bounded_by_all_cached_and_all_full(total: int, out: int, cached: int, written: int,
                                                     inp: float, outp: float, cheap: float) -> None:
    cheap = min(cheap, inp)
    cost = cached_cost_usd(input_tokens=total, output_tokens=out, cached_tokens=cached, cache_write_tokens=written,
                           input_per_mtok=inp, output_per_mtok=outp, cached_per_mtok=cheap, cache_write_per_mtok=inp)
    assert cost >= 0
    assert cost_usd(total, out, cheap, outp) - 1e-9 <= cost <= cost_usd(total, out, inp, outp) + 1e-9
    if cached == 0 and written == 0:
        assert cost == pytest.approx(cost_usd(total, out, inp, outp))
