"""Error bodies as each provider sends them (providers.md §5) -> the same retry verdicts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from router.errors import GatewayError
from router.providers import ADAPTERS, UpstreamError
from router.providers.classify import (
    parse_duration,
    parse_retry_after,
    retry_hint_in_message,
)

Wire = tuple[int, dict[str, str], dict[str, Any], str | None]  # status, headers, body, provider_code


def _openai(code: str | None, type_: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _anthropic(type_: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message, **extra},
            "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


def _gemini(code: int, status: str, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status, "details": list(details)}}


def _quota(quota_id: str) -> dict[str, Any]:
    return {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{
        "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
        "quotaId": quota_id, "quotaDimensions": {"location": "global", "model": "gemini-2.5-flash"},
        "quotaValue": "10"}]}


_RETRY_2S = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2s"}

WIRE: dict[str, dict[str, Wire]] = {
    "openai": {
        "rate_limited": (429, {"x-ratelimit-remaining-tokens": "0"}, _openai(
            "rate_limit_exceeded", "tokens", "Rate limit reached for gpt-4o in organization "
            "org-abc on tokens per min (TPM): Limit 30000, Used 29500, Requested 1200. "
            "Please try again in 2s. Visit https://platform.openai.com/account/rate-limits"),
            "rate_limit_exceeded"),
        "out_of_quota": (429, {}, _openai("insufficient_quota", "insufficient_quota",
            "You exceeded your current quota, please check your plan and billing details."),
            "insufficient_quota"),
        "overloaded": (503, {"retry-after": "2"}, _openai(None, "server_error",
            "The engine is currently overloaded, please try again later"), "server_error"),
        "server_error": (500, {"retry-after-ms": "2000"}, _openai(None, "server_error",
            "The server had an error while processing your request."), "server_error"),
        "bad_key": (401, {}, _openai("invalid_api_key", "invalid_request_error",
            "Incorrect API key provided: sk-abc. You can find your API key at "
            "https://platform.openai.com/account/api-keys."), "invalid_api_key"),
        "too_long": (400, {}, _openai("context_length_exceeded", "invalid_request_error",
            "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in 130512 tokens.", "messages"), "context_length_exceeded"),
        "image_rejected": (400, {}, _openai("invalid_image_format", "invalid_request_error",
            "You uploaded an unsupported image. Please make sure your image is below 20 MB in "
            "size and is of one the following formats: ['png', 'jpeg', 'gif', 'webp']."),
            "invalid_image_format"),
    },
    "anthropic": {
        "rate_limited": (429, {"retry-after": "2"}, _anthropic("rate_limit_error",
            "This request would exceed the rate limit for your organization of 30,000 input "
            "tokens per minute."), "rate_limit_error"),
        "out_of_quota": (429, {}, _anthropic("rate_limit_error",
            "You have reached your specified API usage limits. You will regain access on "
            "2026-12-01 at 00:00 UTC.", details={"error_code": "enforced_spend_limit_reached"}),
            "enforced_spend_limit_reached"),
        "overloaded": (529, {"retry-after": "2"}, _anthropic("overloaded_error", "Overloaded"),
                       "overloaded_error"),
        "server_error": (500, {"retry-after": "2"}, _anthropic("api_error", "Internal server error"),
                         "api_error"),
        "bad_key": (401, {}, _anthropic("authentication_error", "invalid x-api-key"),
                    "authentication_error"),
        "too_long": (400, {}, _anthropic("invalid_request_error",
            "prompt is too long: 212000 tokens > 200000 maximum"), "invalid_request_error"),
        "image_rejected": (400, {}, _anthropic("invalid_request_error",
            "messages.0.content.1.image.source.base64: image exceeds 5 MB maximum: 8259148 "
            "bytes > 5242880 bytes"), "invalid_request_error"),
    },
    "gemini": {
        "rate_limited": (429, {}, _gemini(429, "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details.",
            _quota("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"), _RETRY_2S),
            "RESOURCE_EXHAUSTED"),
        "out_of_quota": (429, {}, _gemini(429, "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details.",
            _quota("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
            {**_RETRY_2S, "retryDelay": "37s"}), "RESOURCE_EXHAUSTED"),
        "overloaded": (503, {"retry-after": "2"}, _gemini(503, "UNAVAILABLE",
            "The model is overloaded. Please try again later."), "UNAVAILABLE"),
        "server_error": (500, {}, _gemini(500, "INTERNAL",
            "An internal error has occurred. Please retry.", _RETRY_2S), "INTERNAL"),
        "bad_key": (403, {}, _gemini(403, "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established "
            "identity). Please use API Key or other form of API consumer identity."),
            "PERMISSION_DENIED"),
        "too_long": (400, {}, _gemini(400, "INVALID_ARGUMENT",
            "The input token count (1200000) exceeds the maximum number of tokens allowed "
            "(1048576)."), "INVALID_ARGUMENT"),
        "image_rejected": (400, {}, _gemini(400, "INVALID_ARGUMENT",
            "Unable to process input image. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting"), "INVALID_ARGUMENT"),
    },
}

# scenario -> (retryable, retry_after_s, image_rejected): the same for every provider.
EXPECTED = {
    "rate_limited": (True, 2.0, False),
    "out_of_quota": (False, None, False),
    "overloaded": (True, 2.0, False),
    "server_error": (True, 2.0, False),
    "bad_key": (False, None, False),
    "too_long": (False, None, False),
    "image_rejected": (False, None, True),
}


@pytest.mark.parametrize("scenario", sorted(EXPECTED))
@pytest.mark.parametrize("provider", sorted(ADAPTERS))
def test_error_body_gets_the_same_verdict(provider: str, scenario: str) -> None:
    adapter = ADAPTERS[provider]
    status, headers, body, provider_code = WIRE[provider][scenario]
    raw = json.dumps(body).encode()
    err = adapter.classify_error(adapter.spec, status, headers, raw)
    assert (err.retryable, err.retry_after_s, err.image_rejected) == EXPECTED[scenario]
    assert err.status == status and err.provider_code == provider_code
    assert isinstance(err, GatewayError) and err.provider == provider
    assert err.message and err.body()["error"]["code"] == err.code
    # parse_response refuses the same way on a non-2xx status.
    with pytest.raises(UpstreamError) as info:
        adapter.parse_response(adapter.spec, status, headers, raw, request_model="m")
    assert (info.value.retryable, info.value.image_rejected) == EXPECTED[scenario][::2]


@pytest.mark.parametrize("provider", sorted(ADAPTERS))
@pytest.mark.parametrize("status,retryable", [(502, True), (504, True), (408, True),
                                              (404, False), (413, False), (422, False)])
def test_non_json_error_pages_fall_back_to_the_status(provider: str, status: int,
                                                      retryable: bool) -> None:
    adapter = ADAPTERS[provider]
    err = adapter.classify_error(adapter.spec, status, {}, b"<html><body>Bad Gateway</body></html>")
    assert err.retryable is retryable
    assert "Bad Gateway" in err.message
    assert not err.image_rejected


def test_x_should_retry_overrides_status_but_not_quota() -> None:
    adapter = ADAPTERS["openai"]
    body = json.dumps(_openai(None, "server_error", "boom")).encode()
    assert not adapter.classify_error(adapter.spec, 500, {"X-Should-Retry": "false"}, body).retryable
    assert adapter.classify_error(adapter.spec, 400, {"x-should-retry": "true"}, body).retryable
    quota = json.dumps(WIRE["openai"]["out_of_quota"][2]).encode()
    assert not adapter.classify_error(adapter.spec, 429, {"x-should-retry": "true"}, quota).retryable


def test_openai_url_download_timeout_counts_as_image_rejected() -> None:
    adapter = ADAPTERS["openai"]
    body = json.dumps(_openai("invalid_value", "invalid_request_error",
                              "Timeout while downloading https://example.com/a.png.", "url")).encode()
    err = adapter.classify_error(adapter.spec, 400, {}, body)
    assert err.image_rejected and not err.retryable and err.code == "upstream_image_rejected"


def test_anthropic_media_type_mismatch_is_image_rejected() -> None:
    adapter = ADAPTERS["anthropic"]
    body = json.dumps(_anthropic("invalid_request_error",
                                 "Image does not match the provided media type image/png")).encode()
    assert adapter.classify_error(adapter.spec, 400, {}, body).image_rejected


@pytest.mark.parametrize("headers,expected", [
    ({"retry-after-ms": "1500"}, 1.5),
    ({"Retry-After-Ms": "1500", "retry-after": "9"}, 1.5),  # ms wins, as in openai-python
    ({"retry-after": "3"}, 3.0),
    ({"retry-after": "0.25"}, 0.25),
    ({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, 30.0),
    ({"retry-after": "Wed, 21 Oct 2015 07:27:00 GMT"}, 0.0),  # in the past: no wait
    ({"retry-after": "soon"}, None),
    ({}, None),
])
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert parse_retry_after(headers, now=now) == expected


@pytest.mark.parametrize("text,expected", [("37s", 37.0), ("1.5s", 1.5), ("20ms", 0.02),
                                           ("2m", 120.0), ("4", 4.0), ("", None), ("s", None),
                                           ("-1s", None)])
def test_parse_duration(text: str, expected: float | None) -> None:
    assert parse_duration(text) == expected


def test_retry_hint_in_openai_message() -> None:
    assert retry_hint_in_message("Please try again in 20ms.") == pytest.approx(0.02)
    assert retry_hint_in_message("Please try again in 1.5s.") == 1.5
    assert retry_hint_in_message("You exceeded your current quota") is None


def test_upstream_error_codes_are_specific() -> None:
    def code(status: int, image: bool = False) -> str:
        return UpstreamError("x", status=status, retryable=False, image_rejected=image).code

    assert code(429) == "upstream_rate_limited"
    assert code(529) == code(503) == "upstream_overloaded"
    assert code(401) == code(403) == "upstream_auth_failed"
    assert code(400) == "upstream_bad_request"
    assert code(400, image=True) == "upstream_image_rejected"
    assert code(500) == "upstream_error"
