"""The rubric judge against a fake OpenAI server on loopback (real HTTP, real openai SDK)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from aperture.servers import listen_port
from evals.base import EvalCase, ImageInfo, Reference, safe_evaluate
from evals.judge import RubricJudge, parse_verdict, to_unit

REPLIES = {
    "GOOD": '{"score": 5, "reason": "all text present"}',
    "FENCED": 'Here you go:\n```json\n{"score": 2, "reason": "mostly missing"}\n```',
    "GARBAGE": "I think it is fine",
    "OUTOFRANGE": '{"score": 9}',
}


def fake_openai(seen: list[dict[str, Any]]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        seen.append({"headers": dict(request.headers), "body": body})
        text = body["messages"][1]["content"][0]["text"]
        answer = text.rsplit("Answer to grade:\n", 1)[1]
        if answer == "BUSY":
            return JSONResponse(
                {"error": {"message": "slow down", "type": "rate_limit", "code": "rate_limited"}},
                status_code=429,
                headers={"retry-after": "0"},
            )
        if answer == "BAD":
            return JSONResponse(
                {"error": {"message": "nope", "type": "invalid_request_error", "code": "bad"}},
                status_code=400,
            )
        content = REPLIES[answer]
        return JSONResponse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": content},
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        )

    return app


@pytest.fixture()
def server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(fake_openai(seen), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}/v1", seen
    srv.should_exit = True
    thread.join(5)
    sock.close()


def case(answer: str, **kw: Any) -> EvalCase:
    return EvalCase(
        "a" * 32, "b" * 16, task="transcribe", prompt="Transcribe it.", answer=answer, **kw
    )


def test_judge_scores_parses_fences_and_sends_image_and_reference(server: tuple[str, list]) -> None:
    url, seen = server
    judge = RubricJudge(base_url=url, model="judge-model")
    img = ImageInfo(sha256="x", format="png", loader=lambda: b"\x89PNG fake")
    [good] = judge.evaluate(case("GOOD", images=(img,), reference=Reference("r", text="Hello")))
    assert good.value == 1.0 and good.passed and good.explanation == "judge 5/5: all text present"
    [fenced] = judge.evaluate(case("FENCED"))
    assert fenced.value == pytest.approx(0.25) and fenced.passed is False
    first = seen[0]
    assert first["headers"]["x-aperture-task"] == "judge"
    assert first["body"]["model"] == "judge-model" and first["body"]["temperature"] == 0
    parts = first["body"]["messages"][1]["content"]
    assert "Ground truth text of the image:\nHello" in parts[0]["text"]
    assert parts[1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_judge_failures_are_not_evaluable_and_transient_ones_retryable(
    server: tuple[str, list],
) -> None:
    url, _ = server
    judge = RubricJudge(base_url=url, model="m")
    [garbage] = safe_evaluate(judge, case("GARBAGE"))
    assert garbage.status == "not_evaluable" and "no JSON object" in garbage.explanation
    [oor] = safe_evaluate(judge, case("OUTOFRANGE"))
    assert "not an integer from 1 to 5" in oor.explanation and not oor.retryable
    [busy] = safe_evaluate(judge, case("BUSY"))
    assert busy.status == "not_evaluable" and busy.retryable
    [bad] = safe_evaluate(judge, case("BAD"))
    assert "HTTP 400" in bad.explanation and not bad.retryable
    [own] = safe_evaluate(judge, EvalCase("a" * 32, "b" * 16, task="judge", answer="x"))
    assert own.explanation == "judge traffic is not judged"


def test_unreachable_judge_is_retryable() -> None:
    port = listen_port("127.0.0.1")  # free, and below the ephemeral range: no self-connect
    [s] = safe_evaluate(
        RubricJudge(base_url=f"http://127.0.0.1:{port}/v1", model="m", timeout_s=2), case("GOOD")
    )
    assert s.retryable and "judge unavailable" in s.explanation


@pytest.mark.parametrize(
    ("content", "want"),
    [
        ('{"score": 4, "reason": "ok"}', (4, "ok")),
        ('x {"score": "3"} y', (3, "")),
        ('{"score": 1.0}', (1, "")),
    ],
)
def test_parse_verdict(content: str, want: tuple[int, str]) -> None:
    assert parse_verdict(content) == want


@pytest.mark.parametrize(
    "content", [None, "", "{}", '{"score": 0}', '{"score": 2.5}', '{"score": "high"}', "{bad json}"]
)
def test_parse_verdict_refuses(content: str | None) -> None:
    with pytest.raises(ValueError):
        parse_verdict(content)


def test_to_unit() -> None:
    assert [to_unit(s) for s in (1, 3, 5)] == [0.0, 0.5, 1.0]
