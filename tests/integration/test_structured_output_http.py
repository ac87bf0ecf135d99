"""``response_format: json_schema`` through the gateway to each provider's emulated wire protocol,
with the openai SDK: the answer is JSON that the schema accepts, streamed or not."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from router.providers.structured import validate_answer
from tests.integration.gateway_harness import (
    Stack,
    data_url,
    image_message,
    page_png,
    running_stack,
)

MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash"}
SCHEMA = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "total": {"type": "number"}},
    "required": ["text", "total"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "receipt", "schema": SCHEMA, "strict": True}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("structured")) as s:
        yield s


@pytest.fixture()
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    stack.clear_emulator()
    with openai.OpenAI(base_url=f"{stack.gateway}/v1", api_key="k", max_retries=0) as c:
        yield c


def _messages() -> list:
    return image_message(data_url(page_png(160, 80)), text="Read the receipt.", detail="low")


@pytest.mark.parametrize("provider", sorted(MODELS))
def test_answer_follows_the_schema(stack: Stack, client: openai.OpenAI, provider: str) -> None:
    resp = client.chat.completions.create(model=MODELS[provider], messages=_messages(), max_tokens=200,
                                          response_format=FORMAT)  # type: ignore[arg-type]
    content = resp.choices[0].message.content
    assert validate_answer(content, SCHEMA) is None, content
    assert resp.choices[0].finish_reason == "stop" and not resp.choices[0].message.tool_calls
    # The emulator answers JSON only when the schema reached it in the provider's own spelling
    # (a forced tool_use on Anthropic, responseSchema on Gemini); plain text otherwise.
    assert stack.emulator_requests()[-1]["protocol"] == provider


@pytest.mark.parametrize("provider", sorted(MODELS))
def test_streamed_answer_follows_the_schema(client: openai.OpenAI, provider: str) -> None:
    stream = client.chat.completions.create(model=MODELS[provider], messages=_messages(), max_tokens=200,
                                            response_format=FORMAT, stream=True)  # type: ignore[arg-type]
    text, finishes = "", []
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            assert not choice.delta.tool_calls
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert validate_answer(text, SCHEMA) is None, text
    assert finishes == ["stop"]


@pytest.mark.parametrize("provider", sorted(MODELS))
def test_a_schema_breaking_answer_is_repaired_once(stack: Stack, client: openai.OpenAI, provider: str) -> None:
    """The emulator breaks the schema once (an empty object); the gateway sends the schema error
    back for one repair, answers the repaired JSON, and bills both calls."""
    stack.fault(match={"provider": provider}, fault="bad-schema", times=1)
    resp = client.chat.completions.create(model=MODELS[provider], messages=_messages(), max_tokens=200,
                                          response_format=FORMAT)  # type: ignore[arg-type]
    content = resp.choices[0].message.content
    assert validate_answer(content, SCHEMA) is None, content
    seen = [r for r in stack.emulator_requests() if r["protocol"] == provider]
    assert [r["fault"] for r in seen] == ["bad-schema", None]
    assert resp.usage is not None
    assert resp.usage.prompt_tokens > sum(r["input_tokens"] for r in seen[:1])  # both calls are billed
    assert resp.usage.prompt_tokens == sum(r["input_tokens"] for r in seen)


@pytest.mark.parametrize("provider", sorted(MODELS))
def test_an_answer_still_broken_after_the_repair_is_refused(stack: Stack, client: openai.OpenAI, provider: str) -> None:
    stack.fault(match={"provider": provider}, fault="bad-schema", times=2)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=MODELS[provider], messages=_messages(), max_tokens=200,
                                       response_format=FORMAT)  # type: ignore[arg-type]
    assert info.value.status_code == 502
    assert isinstance(info.value.body, dict) and info.value.body.get("code") == "structured_output_invalid"
    seen = [r for r in stack.emulator_requests() if r["protocol"] == provider]
    assert [r["fault"] for r in seen] == ["bad-schema", "bad-schema"]  # one repair, no more


def test_traceparent_reaches_the_emulator(stack: Stack, client: openai.OpenAI) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    client.chat.completions.create(
        model=MODELS["openai"], messages=_messages(), max_tokens=50,
        extra_headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
    )
    sent = stack.emulator_requests()[-1]["traceparent"]
    assert sent is not None and sent.split("-")[1] == trace_id
    assert sent.split("-")[2] != "00f067aa0ba902b7"  # the parent is the gateway's own span
