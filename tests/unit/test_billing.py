from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from router.billing import apportion, billed_image_tokens, request_text_tokens


@given(total=st.integers(0, 10**7), weights=st.lists(st.integers(0, 10**5), min_size=1, max_size=30))
def test_apportion_sums_exactly_and_is_proportional(total, weights):
    parts = apportion(total, weights)
    assert sum(parts) == total
    assert all(p >= 0 for p in parts)
    if sum(weights):
        for p, w in zip(parts, weights, strict=True):
            assert abs(p - total * w / sum(weights)) < 1.0 + 1e-9


def test_billed_tokens_use_reported_image_tokens_first():
    assert billed_image_tokens(input_tokens=2000, image_tokens=516, text_estimate=10, image_estimates=[258, 258]) == [258, 258]
    assert billed_image_tokens(input_tokens=1000, image_tokens=None, text_estimate=100, image_estimates=[765, 85]) == [810, 90]
    assert billed_image_tokens(input_tokens=50, image_tokens=None, text_estimate=100, image_estimates=[765]) == [0]


def test_text_estimate_counts_text_parts_only():
    msgs = [
        {"role": "system", "content": "abcd" * 5},
        {"role": "user", "content": [{"type": "text", "text": "abcd" * 3}, {"type": "image_url", "image_url": {"url": "data:x"}}]},
    ]
    assert request_text_tokens(msgs) == 5 + 3 + 2 * 4
