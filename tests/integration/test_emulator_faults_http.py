"""Injected faults over real loopback HTTP: each protocol's own error bodies, connection-level
faults (timeout, reset, broken stream), the control API's queue and the request log."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from emulator.testing import running_emulator

AN = ("/v1/messages", {"x-api-key": "k", "anthropic-version": "2023-06-01"},
      {"model": "claude-haiku-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "Describe it."}]})
OA = ("/v1/chat/completions", {"authorization": "Bearer k"},
      {"model": "gpt-4o", "messages": [{"role": "user", "content": "Describe it."}]})
GM = ("/v1beta/models/gemini-2.5-flash:generateContent", {"x-goog-api-key": "k"},
      {"contents": [{"parts": [{"text": "Describe it."}]}]})


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with running_emulator(mode="instant") as url:
        yield url


@pytest.fixture()
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as c:
        c.delete("/_emulator/requests")
        c.delete("/_emulator/faults")
        yield c


def send(http: httpx.Client, target: tuple, fault: str | None = None, **headers: str) -> httpx.Response:
    path, base_headers, body = target
    extra = {"x-emulator-fault": fault} if fault else {}
    return http.post(path, headers={**base_headers, **extra, **headers}, json=body)


def log(http: httpx.Client) -> list[dict]:
    return http.get("/_emulator/requests").json()["requests"]


@pytest.mark.parametrize(
    ("target", "fault", "status", "check"),
    [
        (OA, "429", 429, lambda r: r.json()["error"]["code"] == "rate_limit_exceeded" and r.headers["retry-after"] == "3"),
        (OA, "quota", 429, lambda r: r.json()["error"]["code"] == "insufficient_quota" and "retry-after" not in r.headers),
        (OA, "500", 500, lambda r: r.json()["error"]["type"] == "server_error"),
        (OA, "503", 503, lambda r: r.json()["error"]["code"] == "overloaded"),
        (AN, "529", 529, lambda r: r.json()["error"] == {"type": "overloaded_error", "message": "Overloaded"}),
        (AN, "429", 429, lambda r: r.json()["error"]["type"] == "rate_limit_error" and r.headers["retry-after"] == "3"),
        (AN, "500", 500, lambda r: r.json()["error"]["type"] == "api_error"),
        (AN, "quota", 429, lambda r: "retry-after" not in r.headers),
        (GM, "429", 429, lambda r: r.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
         and r.json()["error"]["details"][-1] == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}),
        (GM, "503", 503, lambda r: r.json()["error"]["status"] == "UNAVAILABLE"),
        (GM, "529", 503, lambda r: r.json()["error"]["status"] == "UNAVAILABLE"),
        (GM, "500", 500, lambda r: r.json()["error"]["status"] == "INTERNAL"),
    ],
)
def test_header_faults_answer_in_the_protocols_words(http: httpx.Client, target: tuple, fault: str, status: int,
                                                      check) -> None:  # type: ignore[no-untyped-def]
    r = send(http, target, fault, **{"x-emulator-retry-after": "3"})
    assert r.status_code == status
    assert check(r)
    entry = log(http)[-1]
    assert (entry["fault"], entry["status"]) == (fault, status)


def test_bad_fault_header_is_a_400(http: httpx.Client) -> None:
    r = send(http, AN, "teapot")
    assert r.status_code == 400 and "unknown fault" in r.json()["error"]["message"]


def test_latency_header_still_answers(http: httpx.Client) -> None:
    assert send(http, OA, **{"x-emulator-latency-ms": "30"}).status_code == 200


def test_programmed_faults_are_consumed_in_order(http: httpx.Client) -> None:
    r = http.post("/_emulator/faults", json={"match": {"provider": "anthropic"}, "fault": "529", "times": 2})
    assert r.status_code == 201
    http.post("/_emulator/faults", json={"match": {"model": "gpt-4o"}, "fault": "500"})
    assert len(http.get("/_emulator/faults").json()["pending"]) == 2
    statuses = [send(http, AN).status_code, send(http, OA).status_code, send(http, AN).status_code,
                send(http, AN).status_code, send(http, OA).status_code]
    assert statuses == [529, 500, 529, 200, 200]
    entries = log(http)
    assert [(e["protocol"], e["status"], e["fault"]) for e in entries] == [
        ("anthropic", 529, "529"), ("openai", 500, "500"), ("anthropic", 529, "529"),
        ("anthropic", 200, None), ("openai", 200, None)]
    assert http.get("/_emulator/faults").json()["pending"] == []


def test_control_api_refuses_bad_specs_and_clears(http: httpx.Client) -> None:
    assert http.post("/_emulator/faults", json={"fault": "999"}).status_code == 400
    assert http.post("/_emulator/faults", content=b"not json").status_code == 400
    http.post("/_emulator/faults", json={"fault": "503", "times": None})
    assert http.delete("/_emulator/faults").json() == {"cleared": 1}
    assert send(http, GM).status_code == 200
    assert http.delete("/_emulator/requests").status_code == 200 and log(http) == []
    assert http.get("/_emulator/health").json()["status"] == "ok"


def test_sdk_retries_a_programmed_429_with_retry_after(base_url: str, http: httpx.Client) -> None:
    http.post("/_emulator/faults", json={"match": {"provider": "openai"}, "fault": "429", "times": 2,
                                         "retry_after": 0.05})
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="k", max_retries=2) as client:
        out = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Describe it."}])
    assert out.choices[0].message.content
    assert [e["status"] for e in log(http)] == [429, 429, 200]


def wait_for_log(http: httpx.Client, n: int) -> list[dict]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        entries = log(http)
        if len(entries) >= n:
            return entries
        time.sleep(0.05)
    raise AssertionError("the request log never filled")


def test_timeout_holds_until_the_caller_gives_up(base_url: str, http: httpx.Client) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base_url}{AN[0]}", headers={**AN[1], "x-emulator-fault": "timeout"}, json=AN[2], timeout=0.3)
    entry = wait_for_log(http, 1)[-1]
    assert (entry["fault"], entry["status"]) == ("timeout", 499)


def test_timeout_ends_with_the_protocols_deadline_error() -> None:
    with running_emulator(mode="instant", fault_hold_s=0.1) as url:
        r = httpx.post(f"{url}{GM[0]}", headers={**GM[1], "x-emulator-fault": "timeout"}, json=GM[2], timeout=10)
    assert r.status_code == 504 and r.json()["error"]["status"] == "DEADLINE_EXCEEDED"


@pytest.mark.parametrize("target", [OA, AN, GM])
def test_reset_closes_without_a_response(http: httpx.Client, target: tuple) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        send(http, target, "reset")
    assert send(http, target).status_code == 200  # the server itself is fine
    assert [e["fault"] for e in log(http)] == ["reset", None]


@pytest.mark.parametrize("target", [OA, AN])
def test_broken_stream_cuts_after_some_chunks(http: httpx.Client, target: tuple) -> None:
    path, headers, body = target
    received: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError), http.stream(
            "POST", path, headers={**headers, "x-emulator-fault": "broken-stream"}, json={**body, "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            received.append(line)
    assert any(line.startswith("data: ") for line in received)
    assert "data: [DONE]" not in received and not any("message_stop" in line for line in received)


def test_broken_non_streaming_body(http: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        send(http, GM, "broken-stream")


def test_broken_gemini_sse(http: httpx.Client) -> None:
    received: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError), http.stream(
            "POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            headers={**GM[1], "x-emulator-fault": "broken-stream"}, json=GM[2]) as r:
        for line in r.iter_lines():
            received.append(line)
    assert received and not any("finishReason" in line for line in received)
