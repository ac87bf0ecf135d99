"""Property tests: whatever sequence of plausible (or garbage) events a provider sends, a
translator emits only well-formed OpenAI chunks or raises UpstreamError, never anything else."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from router.providers import ADAPTERS, UpstreamError
from tests.unit.test_providers_wire import check_chunk

JSON = dict[str, Any]
_text = st.text(max_size=12)
_count = st.integers(0, 10_000)
_args = st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3)

# --------------------------------------------------------------------------- anthropic events

_anthropic_event = st.one_of(
    st.builds(lambda u: ("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "model": "claude", "content": [], "usage": u}}),
        st.fixed_dictionaries({"input_tokens": _count, "output_tokens": _count})),
    st.builds(lambda i, t: ("content_block_start", {"type": "content_block_start", "index": i,
                                                    "content_block": {"type": "text", "text": t}}),
              st.integers(0, 3), _text),
    st.builds(lambda i, n: ("content_block_start", {"type": "content_block_start", "index": i,
                                                    "content_block": {"type": "tool_use",
                                                                      "id": "toolu_1", "name": n,
                                                                      "input": {}}}),
              st.integers(0, 3), _text),
    st.builds(lambda i, t: ("content_block_delta", {"type": "content_block_delta", "index": i,
                                                    "delta": {"type": "text_delta", "text": t}}),
              st.integers(0, 3), _text),
    st.builds(lambda i, t: ("content_block_delta", {"type": "content_block_delta", "index": i,
                                                    "delta": {"type": "input_json_delta",
                                                              "partial_json": t}}),
              st.integers(0, 3), _text),
    st.builds(lambda i: ("content_block_delta", {"type": "content_block_delta", "index": i,
                                                 "delta": {"type": "thinking_delta",
                                                           "thinking": "hm"}}),
              st.integers(0, 3)),
    st.builds(lambda r, o: ("message_delta", {"type": "message_delta",
                                              "delta": {"stop_reason": r},
                                              "usage": {"output_tokens": o}}),
              st.sampled_from([None, "end_turn", "max_tokens", "tool_use", "stop_sequence",
                               "refusal", "pause_turn", "brand_new_reason"]), _count),
    st.just(("content_block_stop", {"type": "content_block_stop", "index": 0})),
    st.just(("ping", {"type": "ping"})),
    st.just(("message_stop", {"type": "message_stop"})),
    st.just(("mystery", {"type": "mystery", "x": [1]})),
)

# --------------------------------------------------------------------------- gemini frames

_gemini_part = st.one_of(
    st.builds(lambda t: {"text": t}, _text),
    st.builds(lambda t: {"text": t, "thought": True}, _text),
    st.builds(lambda n, a: {"functionCall": {"name": n, "args": a}}, _text, _args),
)
_gemini_candidate = st.builds(
    lambda parts, reason, index: {
        "content": {"role": "model", "parts": parts},
        **({"finishReason": reason} if reason else {}),
        **({"index": index} if index is not None else {}),
    },
    st.lists(_gemini_part, max_size=3),
    st.sampled_from([None, "STOP", "MAX_TOKENS", "SAFETY", "RECITATION", "OTHER", "NEW_ONE"]),
    st.one_of(st.none(), st.integers(0, 2)),
)
_gemini_frame = st.builds(
    lambda cands, usage, blocked: {
        "candidates": cands,
        "usageMetadata": usage,
        "responseId": "r1",
        **({"promptFeedback": {"blockReason": "SAFETY"}} if blocked else {}),
    },
    st.lists(_gemini_candidate, max_size=2),
    st.fixed_dictionaries({"promptTokenCount": _count, "candidatesTokenCount": _count},
                          optional={"thoughtsTokenCount": _count}),
    st.booleans(),
).map(lambda f: (None, f))

# --------------------------------------------------------------------------- openai chunks

_openai_delta = st.fixed_dictionaries({}, optional={
    "role": st.just("assistant"),
    "content": st.one_of(st.none(), _text),
    "refusal": st.none(),
    "tool_calls": st.lists(st.fixed_dictionaries(
        {"index": st.integers(0, 2), "function": st.fixed_dictionaries(
            {}, optional={"name": _text, "arguments": _text})},
        optional={"id": _text, "type": st.just("function")}), max_size=2),
})
_openai_chunk = st.one_of(
    st.builds(lambda d, r: {"id": "c", "object": "chat.completion.chunk", "created": 1,
                            "model": "gpt", "choices": [{"index": 0, "delta": d,
                                                         "finish_reason": r}]},
              _openai_delta, st.sampled_from([None, "stop", "length", "tool_calls",
                                              "content_filter"])),
    st.builds(lambda p, c: {"id": "c", "object": "chat.completion.chunk", "created": 1,
                            "model": "gpt", "choices": [],
                            "usage": {"prompt_tokens": p, "completion_tokens": c,
                                      "total_tokens": p + c}}, _count, _count),
).map(lambda c: (None, c))

EVENTS = {"anthropic": _anthropic_event, "gemini": _gemini_frame, "openai": _openai_chunk}


def _run(provider: str, evs: list[tuple[str | None, JSON]], include_usage: bool) -> list[JSON]:
    translator = ADAPTERS[provider].stream_translator(request_model="m",
                                                      include_usage=include_usage)
    out: list[JSON] = []
    for name, doc in evs:
        out += translator.feed(name, json.dumps(doc))
    try:
        out += translator.finish()
    except UpstreamError as exc:
        assert exc.provider_code == "stream_truncated" and translator.finish_reason is None
    return out


def _check_all(provider: str, chunks: list[JSON], include_usage: bool) -> None:
    for chunk in chunks:
        check_chunk(chunk)
    finishes = Counter(c["choices"][0]["index"] for c in chunks
                       if c["choices"] and c["choices"][0]["finish_reason"])
    usage_chunks = [c for c in chunks if not c["choices"]]
    assert len(usage_chunks) <= (1 if include_usage else 0) or provider == "openai"
    if provider != "openai":  # a passthrough repeats what OpenAI sends; ours finish once
        assert all(n == 1 for n in finishes.values())
        if usage_chunks:
            assert chunks[-1] is usage_chunks[-1]


@settings(max_examples=80, deadline=None)
@given(st.sampled_from(sorted(EVENTS)).flatmap(
    lambda p: st.tuples(st.just(p), st.lists(EVENTS[p], max_size=12), st.booleans())))
def test_plausible_event_sequences_give_well_formed_chunks(case: tuple) -> None:
    provider, evs, include_usage = case
    _check_all(provider, _run(provider, evs, include_usage), include_usage)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)
_keys = st.sampled_from(["type", "choices", "candidates", "delta", "message", "error", "usage",
                         "content_block", "index", "usageMetadata", "promptFeedback"])
_garbage_doc = st.dictionaries(_keys, _json, max_size=4)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(EVENTS)),
       st.lists(st.tuples(st.one_of(st.none(), st.sampled_from([
           "message_start", "content_block_start", "content_block_delta", "message_delta",
           "error", "ping"])), st.one_of(_garbage_doc.map(json.dumps), st.text(max_size=20))),
           max_size=8))
def test_garbage_events_raise_upstream_error_or_give_well_formed_chunks(
    provider: str, evs: list[tuple[str | None, str]]
) -> None:
    translator = ADAPTERS[provider].stream_translator(request_model="m", include_usage=True)
    chunks: list[JSON] = []
    try:
        for name, data in evs:
            chunks += translator.feed(name, data)
        chunks += translator.finish()
    except UpstreamError:
        pass
    for chunk in chunks:
        check_chunk(chunk)


_garbage_body = st.one_of(
    st.dictionaries(st.sampled_from(["choices", "content", "candidates", "usage", "usageMetadata",
                                     "promptFeedback", "stop_reason", "id", "model"]),
                    _json, max_size=5).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=40),
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(EVENTS)), _garbage_body, st.sampled_from([200, 400, 429, 503, 529]))
def test_garbage_bodies_raise_upstream_error_or_parse_to_a_completion(
    provider: str, body: bytes, status: int
) -> None:
    adapter = ADAPTERS[provider]
    err = adapter.classify_error(adapter.spec, status, {}, body)
    assert isinstance(err, UpstreamError) and err.status == status
    try:
        result = adapter.parse_response(adapter.spec, status, {}, body, request_model="m")
    except UpstreamError:
        return
    assert status == 200
    assert result.completion["object"] == "chat.completion"
    assert isinstance(result.completion["choices"], list)
