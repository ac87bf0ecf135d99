from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.config import ProviderConfig
from router.errors import AuthenticationFailed, BudgetExceeded, InvalidRequest
from router.providers.base import UpstreamError
from router.providers.classify import parse_duration, parse_retry_after
from router.retry import (
    RetryPolicy,
    backoff_cap,
    backoff_delay,
    is_retryable,
    retry_delay,
)
from router.upstream import UpstreamTransportError

policies = st.builds(
    RetryPolicy,
    max_retries=st.integers(0, 10),
    base_s=st.floats(0, 10, allow_nan=False),
    max_s=st.floats(0, 120, allow_nan=False),
)


@settings(deadline=None)
@given(policies, st.integers(0, 5000), st.integers(0, 2**32))
def test_backoff_within_bounds(policy: RetryPolicy, attempt: int, seed: int) -> None:
    delay = backoff_delay(attempt, policy, random.Random(seed))
    assert 0.0 <= delay <= backoff_cap(attempt, policy) <= policy.max_s


@settings(deadline=None)
@given(policies, st.integers(0, 200))
def test_backoff_cap_is_monotone_and_exponential(policy: RetryPolicy, attempt: int) -> None:
    assert backoff_cap(attempt, policy) <= backoff_cap(attempt + 1, policy)
    assert backoff_cap(attempt, policy) == min(policy.max_s, policy.base_s * 2.0**attempt)


def test_no_jitter_is_the_cap_and_full_jitter_varies() -> None:
    policy = RetryPolicy(base_s=0.5, max_s=8.0, jitter="none")
    assert [backoff_delay(n, policy, random.Random(0)) for n in range(6)] == [0.5, 1, 2, 4, 8, 8]
    full = RetryPolicy(base_s=0.5, max_s=8.0)
    draws = {backoff_delay(3, full, random.Random(seed)) for seed in range(20)}
    assert len(draws) > 10 and all(0 <= d <= 4.0 for d in draws)


def test_policy_from_provider_config_and_validation() -> None:
    cfg = ProviderConfig(kind="openai", base_url="http://x", max_retries=4, backoff_base_s=1, backoff_max_s=3)
    assert RetryPolicy.from_provider(cfg, max_wait_s=10) == RetryPolicy(4, 1.0, 3.0, "full", 10.0)
    with pytest.raises(ValueError):
        RetryPolicy(max_retries=-1)


NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "7"}, 7.0),
        ({"Retry-After": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "9"}, 9.0),
        ({"retry-after": format_datetime(NOW + timedelta(seconds=42), usegmt=True)}, 42.0),
        ({"retry-after": format_datetime(NOW - timedelta(seconds=42), usegmt=True)}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=NOW.timestamp()) == expected


def test_http_date_without_zone_is_gmt_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    header = {"retry-after": format_datetime(NOW + timedelta(seconds=30)).replace("+0000", "-0000")}
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert parse_retry_after(header, now=NOW.timestamp()) == 30.0
    finally:
        monkeypatch.undo()
        time.tzset()


@settings(deadline=None)
@given(st.integers(0, 10**6))
def test_parse_retry_after_seconds_roundtrip(seconds: int) -> None:
    assert parse_retry_after({"retry-after": str(seconds)}) == seconds
    assert parse_retry_after({"retry-after-ms": str(seconds)}) == pytest.approx(seconds / 1000)


@settings(deadline=None)
@given(st.text(max_size=30))
def test_parse_retry_after_never_raises(value: str) -> None:
    result = parse_retry_after({"retry-after": value, "retry-after-ms": value}, now=NOW.timestamp())
    assert result is None or result >= 0


def test_gemini_retry_info() -> None:
    import json

    from router.providers import ADAPTERS

    body = {
        "error": {
            "code": 429,
            "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"},
            ],
        }
    }
    adapter = ADAPTERS["gemini"]
    error = adapter.classify_error(adapter.spec, 429, {"retry-after": "5"}, json.dumps(body).encode())
    assert error.retryable and error.retry_after_s == 37.0  # the body's hint wins over the header
    assert parse_duration("1.5s") == 1.5 and parse_duration("10m") == 600.0 and parse_duration("soon") is None


@pytest.mark.parametrize("body", [
    {"error": {"code": 429, "details": "x"}},
    {"error": {"code": 429, "details": [1, "x", {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "soon"}]}},
    [1, 2],
    {"error": "quota"},
])
def test_gemini_malformed_retry_info_falls_back_to_the_header(body: object) -> None:
    import json

    from router.providers import ADAPTERS

    adapter = ADAPTERS["gemini"]
    error = adapter.classify_error(adapter.spec, 429, {"retry-after": "3"}, json.dumps(body).encode())
    assert error.retryable and error.retry_after_s == 3.0


def _err(status: int, *, retryable: bool, after: float | None = None, **kw: object) -> UpstreamError:
    return UpstreamError("upstream said no", status=status, retryable=retryable, retry_after_s=after, **kw)  # type: ignore[arg-type]


RNG = random.Random(1)
POLICY = RetryPolicy(max_retries=3, base_s=0.5, max_s=4.0, max_wait_s=30.0)


def test_retry_after_is_honoured_exactly() -> None:
    assert retry_delay(_err(429, retryable=True, after=2.5), 0, POLICY, RNG) == 2.5


def test_retry_after_beyond_max_wait_fails_over() -> None:
    assert retry_delay(_err(429, retryable=True, after=31.0), 0, POLICY, RNG) is None


def test_backoff_when_no_hint_and_retries_run_out() -> None:
    err = _err(500, retryable=True)
    delays = [retry_delay(err, n, POLICY, random.Random(7)) for n in range(4)]
    assert all(d is not None and 0 <= d <= backoff_cap(n, POLICY) for n, d in enumerate(delays[:3]))
    assert delays[3] is None


@pytest.mark.parametrize(
    "error",
    [
        _err(400, retryable=False, image_rejected=True),
        _err(400, retryable=True, image_rejected=True),  # even if mislabelled
        _err(401, retryable=True),
        _err(403, retryable=False),
        _err(404, retryable=False),
        _err(429, retryable=True, provider_code="insufficient_quota"),
        _err(429, retryable=True, provider_code="enforced_spend_limit_reached"),
        _err(502, retryable=False),
        BudgetExceeded("over"),
        AuthenticationFailed("bad key"),
        InvalidRequest("bad"),
        ValueError("not ours"),
    ],
)
def test_terminal_errors_are_never_retried(error: BaseException) -> None:
    assert not is_retryable(error)
    assert retry_delay(error, 0, POLICY, RNG) is None


def test_transport_errors_are_retryable() -> None:
    assert retry_delay(UpstreamTransportError("t", kind="timeout"), 0, POLICY, RNG) is not None
    assert retry_delay(UpstreamTransportError("t", kind="protocol"), 0, POLICY, RNG) is None


@settings(deadline=None)
@given(
    policies,
    st.integers(0, 20),
    st.one_of(st.none(), st.floats(0, 1000, allow_nan=False)),
    st.integers(0, 2**32),
)
def test_retry_delay_bounded(policy: RetryPolicy, attempt: int, hint: float | None, seed: int) -> None:
    delay = retry_delay(_err(503, retryable=True, after=hint), attempt, policy, random.Random(seed))
    if attempt >= policy.max_retries:
        assert delay is None
    elif delay is not None:
        assert 0 <= delay <= max(policy.max_wait_s, policy.max_s)
        if hint is not None:
            assert delay == hint
    else:
        assert hint is not None and hint > policy.max_wait_s
