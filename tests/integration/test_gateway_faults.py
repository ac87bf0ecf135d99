"""Upstream failures on loopback, seen by a client of the gateway: retries, fallbacks, timeouts,
broken streams and circuit breakers, with attempt counts read from the emulator's request log."""

from __future__ import annotations

import time

import duckdb
import openai
import pytest

from tests.integration.gateway_harness import data_url, image_message, page_png, running_stack
from tests.integration.test_rollout_gateway import wait_for

pytestmark = pytest.mark.slow

OVERRIDES = {
    "providers.openai.timeout_s": 2.0,
    "providers.openai.backoff_base_s": 0.05,
    "providers.anthropic.backoff_base_s": 0.05,
    "providers.anthropic.cooldown_failures": 2,
    "providers.anthropic.cooldown_s": 1.0,
    "providers.anthropic.max_retries": 0,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("faults"), overrides=OVERRIDES) as s:
        yield s


@pytest.fixture
def client(stack):
    stack.clear_emulator()
    yield openai.OpenAI(base_url=stack.gateway + "/v1", api_key="x", max_retries=0, timeout=60)
    stack.clear_emulator()


def attempts(stack, protocol):
    return [r for r in stack.emulator_requests() if r["protocol"] == protocol]


def msg():
    return image_message(data_url(page_png()))


def test_429_with_retry_after_then_success(client, stack):
    stack.fault(match={"provider": "openai"}, fault="429", retry_after=1, times=1)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=msg())
    assert raw.parse().choices[0].message.content
    log = attempts(stack, "openai")
    assert [r["status"] for r in log] == [429, 200]


def test_500s_fall_back_to_another_provider(client, stack):
    stack.fault(match={"provider": "openai"}, fault="500", times=3)  # 1 try + 2 retries on gpt-4o
    raw = client.chat.completions.with_raw_response.create(model="aperture/auto", messages=msg())
    assert raw.headers["x-aperture-route"] == "claude-sonnet-4-5:auto"
    assert [r["status"] for r in attempts(stack, "openai")] == [500, 500, 500]
    assert [r["status"] for r in attempts(stack, "anthropic")] == [200]
    stack.flush()
    with duckdb.connect(str(stack.db), read_only=True) as conn:
        path, retries = conn.execute(
            "SELECT fallback_path, retry_count FROM request_spans ORDER BY ts DESC LIMIT 1").fetchone()
    assert path == "gpt-4o:high > claude-sonnet-4-5:auto" and retries == 3


def test_529_is_retried(client, stack):
    stack.fault(match={"provider": "anthropic"}, fault="529", times=1)
    stack.fault(match={"provider": "openai"}, fault="500", times=3)
    raw = client.chat.completions.with_raw_response.create(model="aperture/auto", messages=msg())
    # gpt-4o fails 3×, Claude's 529 is not retried here (max_retries 0) → Gemini answers.
    assert raw.headers["x-aperture-route"] == "gemini-2.5-pro:auto"
    assert [r["status"] for r in attempts(stack, "anthropic")] == [529]
    assert [r["status"] for r in attempts(stack, "gemini")] == [200]


def test_timeout_then_retry(client, stack):
    # Read the page once first: a cold OCR read on a loaded machine can outlast the 2 s timeout,
    # and the retry must answer from the emulator's cache, not race the clock.
    client.chat.completions.create(model="gpt-4o-mini", messages=msg())
    stack.clear_emulator()
    stack.fault(match={"provider": "openai"}, fault="timeout", times=1)
    completion = client.chat.completions.create(model="gpt-4o-mini", messages=msg())
    assert completion.choices[0].message.content
    # The held attempt is logged when the emulator notices the gateway left (it looks every
    # 50 ms), which can be after the retry's answer reached the client.
    wait_for(lambda: len(attempts(stack, "openai")) >= 2, timeout_s=5.0, what="both attempts in the emulator's log")
    assert sorted(r["status"] for r in attempts(stack, "openai")) == [200, 499]


def test_terminal_quota_error_is_not_retried(client, stack):
    stack.fault(match={"provider": "openai"}, fault="quota", times=5)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-4o-mini", messages=msg())
    assert info.value.status_code in (402, 429, 502)
    assert len(attempts(stack, "openai")) == 1


def test_stream_broken_midway_ends_with_an_error_event(client, stack):
    stack.fault(match={"provider": "openai"}, fault="broken-stream", times=1)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=msg(), stream=True)
    received = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk)
    assert info.value.code == "upstream_stream_broken"  # the code docs/troubleshooting.md names
    assert len(attempts(stack, "openai")) == 1


def test_breaker_opens_then_recovers(client, stack):
    from router.breaker import BreakerRegistry

    stack.app.state.gateway.breakers = BreakerRegistry()  # independent of the tests before it
    stack.fault(match={"provider": "anthropic"}, fault="500", times=None)
    for _ in range(2):
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="claude-haiku-4-5", messages=msg())
    assert len(attempts(stack, "anthropic")) == 2
    # Open: refused at once, nothing sent upstream.
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="claude-haiku-4-5", messages=msg())
    assert info.value.status_code == 503
    assert info.value.response.headers["retry-after"] == "1"  # the breaker's 1 s cool-down
    assert len(attempts(stack, "anthropic")) == 2
    stack.clear_emulator()
    time.sleep(1.2)
    completion = client.chat.completions.create(model="claude-haiku-4-5", messages=msg())
    assert completion.choices[0].message.content
    assert [r["status"] for r in attempts(stack, "anthropic")] == [200]


@pytest.mark.parametrize("fault", ["500", "reset"])
@pytest.mark.parametrize("stream", [False, True])
def test_streams_and_completions_retry_alike(client, stack, fault, stream):
    """One retry policy: a stream is retried before its first byte exactly as a completion is
    (1 try + ``max_retries`` 2), for an error answer and for a connection reset alike."""
    stack.fault(match={"provider": "openai"}, fault=fault, times=2)
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in
                       client.chat.completions.create(model="gpt-4o-mini", messages=msg(), stream=True) if c.choices)
    else:
        text = client.chat.completions.create(model="gpt-4o-mini", messages=msg()).choices[0].message.content
    assert text
    assert len(attempts(stack, "openai")) == 3
