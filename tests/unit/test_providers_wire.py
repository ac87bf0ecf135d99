"""Provider wire formats for the adapter tests, built from providers.md §1.7–1.9, §2.5–2.7,
§3.4–3.6 and §5 (bodies and events as the real APIs send them), plus the checks that turn an
adapter's output back into one canonical shape so every provider can be held to the same
expectations. No tests here beyond the checks' own sanity tests."""

from __future__ import annotations

import json
from typing import Any

from router.providers.sse import encode_sse, iter_sse_events

JSON = dict[str, Any]
CREATED = 1_700_000_000

# --------------------------------------------------------------------------- responses


def openai_response(text: str | None, calls: list[tuple[str, JSON]], finish: str,
                    usage: tuple[int, int]) -> bytes:
    message: JSON = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
    if calls:
        message["tool_calls"] = [
            {"id": f"call_{i}abc", "type": "function",
             "function": {"name": n, "arguments": json.dumps(a, separators=(",", ":"))}}
            for i, (n, a) in enumerate(calls)
        ]
    return json.dumps({
        "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion",
        "created": 1741569952, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                  "total_tokens": usage[0] + usage[1],
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                "accepted_prediction_tokens": 0,
                                                "rejected_prediction_tokens": 0}},
        "service_tier": "default", "system_fingerprint": "fp_fc9f1d7035",
    }).encode()


_ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_GEMINI_STOP = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP",
                "content_filter": "SAFETY"}


def anthropic_response(text: str | None, calls: list[tuple[str, JSON]], finish: str,
                       usage: tuple[int, int]) -> bytes:
    content: list[JSON] = [{"type": "text", "text": text}] if text else []
    content += [{"type": "tool_use", "id": f"toolu_01A{i}", "name": n, "input": a}
                for i, (n, a) in enumerate(calls)]
    return json.dumps({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5-20250929", "content": content,
        "stop_reason": _ANTHROPIC_STOP[finish], "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "output_tokens": usage[1],
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
    }).encode()


def gemini_usage(prompt: int, completion: int, *, image_tokens: int | None = None) -> JSON:
    details = [{"modality": "TEXT", "tokenCount": prompt - (image_tokens or 0)}]
    if image_tokens:
        details.append({"modality": "IMAGE", "tokenCount": image_tokens})
    out: JSON = {"promptTokenCount": prompt, "totalTokenCount": prompt + completion,
                 "promptTokensDetails": details}
    if completion:
        out["candidatesTokenCount"] = completion
    return out


def gemini_response(text: str | None, calls: list[tuple[str, JSON]], finish: str,
                    usage: tuple[int, int]) -> bytes:
    parts: list[JSON] = [{"text": text}] if text else []
    parts += [{"functionCall": {"name": n, "args": a}} for n, a in calls]
    return json.dumps({
        "candidates": [{"content": {"parts": parts, "role": "model"},
                        "finishReason": _GEMINI_STOP[finish], "index": 0}],
        "usageMetadata": gemini_usage(*usage),
        "modelVersion": "gemini-2.5-flash", "responseId": "mMjTaKzJHqW0nvgP0q2m-QI",
    }).encode()


RESPONSES = {"openai": openai_response, "anthropic": anthropic_response, "gemini": gemini_response}

# --------------------------------------------------------------------------- streams
# Each builder returns the stream as SSE text exactly as it crosses the wire.


def openai_stream(pieces: list[str], calls: list[tuple[str, JSON]], finish: str,
                  usage: tuple[int, int], *, error_after: int | None = None) -> str:
    head = {"id": "chatcmpl-stream1", "object": "chat.completion.chunk", "created": 1741569952,
            "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_fc9f1d7035",
            "service_tier": "default"}

    def chunk(delta: JSON, reason: str | None = None) -> str:
        return encode_sse(None, json.dumps({**head, "choices": [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}],
            "usage": None}))

    out = chunk({"role": "assistant", "content": "", "refusal": None})
    for i, piece in enumerate(pieces):
        if error_after is not None and i == error_after:
            return out + encode_sse(None, json.dumps({"error": {
                "message": "The server had an error while processing your request. Sorry about that!",
                "type": "server_error", "param": None, "code": None}}))
        out += chunk({"content": piece})
    for i, (name, args) in enumerate(calls):
        out += chunk({"tool_calls": [{"index": i, "id": f"call_{i}abc", "type": "function",
                                      "function": {"name": name, "arguments": ""}}]})
        text = json.dumps(args, separators=(",", ":"))
        for part in (text[: len(text) // 2], text[len(text) // 2:]):
            out += chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
    out += chunk({}, finish)
    out += encode_sse(None, json.dumps({**head, "choices": [], "usage": {
        "prompt_tokens": usage[0], "completion_tokens": usage[1],
        "total_tokens": usage[0] + usage[1],
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0}}}))
    return out + encode_sse(None, "[DONE]")


def anthropic_stream(pieces: list[str], calls: list[tuple[str, JSON]], finish: str,
                     usage: tuple[int, int], *, error_after: int | None = None) -> str:
    def ev(name: str, data: JSON) -> str:
        return encode_sse(name, json.dumps({"type": name, **data}))

    out = ev("message_start", {"message": {
        "id": "msg_01stream", "type": "message", "role": "assistant", "content": [],
        "model": "claude-sonnet-4-5-20250929", "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": usage[0], "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0, "output_tokens": 1}}})
    block = 0
    if pieces:
        out += ev("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        out += ev("ping", {})
        for i, piece in enumerate(pieces):
            if error_after is not None and i == error_after:
                return out + ev("error", {"error": {"type": "overloaded_error",
                                                    "message": "Overloaded"}})
            out += ev("content_block_delta",
                      {"index": 0, "delta": {"type": "text_delta", "text": piece}})
        out += ev("content_block_stop", {"index": 0})
        block = 1
    for i, (name, args) in enumerate(calls):
        index = block + i
        out += ev("content_block_start", {"index": index, "content_block": {
            "type": "tool_use", "id": f"toolu_01A{i}", "name": name, "input": {}}})
        text = json.dumps(args)
        for part in (text[: len(text) // 2], text[len(text) // 2:]):
            out += ev("content_block_delta", {"index": index, "delta": {
                "type": "input_json_delta", "partial_json": part}})
        out += ev("content_block_stop", {"index": index})
    out += ev("message_delta", {"delta": {"stop_reason": _ANTHROPIC_STOP[finish],
                                          "stop_sequence": None},
                                "usage": {"output_tokens": usage[1]}})
    return out + ev("message_stop", {})


def gemini_stream(pieces: list[str], calls: list[tuple[str, JSON]], finish: str,
                  usage: tuple[int, int], *, error_after: int | None = None) -> str:
    def frame(parts: list[JSON], reason: str | None, completion: int) -> str:
        cand: JSON = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if reason:
            cand["finishReason"] = reason
        return encode_sse(None, json.dumps({
            "candidates": [cand], "usageMetadata": gemini_usage(usage[0], completion),
            "modelVersion": "gemini-2.5-flash", "responseId": "stream-resp-1"}))

    out = ""
    for i, piece in enumerate(pieces):
        if error_after is not None and i == error_after:
            return out + encode_sse(None, json.dumps({"error": {
                "code": 503, "message": "The model is overloaded. Please try again later.",
                "status": "UNAVAILABLE"}}))
        last = i == len(pieces) - 1 and not calls
        out += frame([{"text": piece}], _GEMINI_STOP[finish] if last else None,
                     usage[1] if last else i + 1)
    if calls:
        out += frame([{"functionCall": {"name": n, "args": a}} for n, a in calls],
                     _GEMINI_STOP[finish], usage[1])
    return out  # no [DONE]: the stream ends when the connection closes


STREAMS = {"openai": openai_stream, "anthropic": anthropic_stream, "gemini": gemini_stream}


def events(wire: str) -> list[tuple[str | None, str]]:
    return [(e.event, e.data) for e in iter_sse_events(wire.splitlines())]


# --------------------------------------------------------------------------- checks

FINISH = {"stop", "length", "tool_calls", "content_filter", "function_call"}


def check_chunk(chunk: JSON) -> None:
    """Fail unless ``chunk`` is a well-formed OpenAI ``chat.completion.chunk``."""
    assert chunk["object"] == "chat.completion.chunk"
    assert isinstance(chunk["id"], str) and chunk["id"]
    assert isinstance(chunk["created"], int)
    assert isinstance(chunk["model"], str)
    assert isinstance(chunk["choices"], list)
    if not chunk["choices"]:
        usage = chunk["usage"]
        assert all(isinstance(usage[k], int) and usage[k] >= 0
                   for k in ("prompt_tokens", "completion_tokens", "total_tokens"))
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        return
    assert chunk.get("usage") is None
    for choice in chunk["choices"]:
        assert isinstance(choice["index"], int)
        assert choice["finish_reason"] is None or choice["finish_reason"] in FINISH
        delta = choice["delta"]
        assert isinstance(delta, dict)
        assert delta.get("role", "assistant") == "assistant"
        assert isinstance(delta.get("content"), (str, type(None)))
        assert isinstance(delta.get("refusal"), (str, type(None)))
        for call in delta.get("tool_calls") or []:
            assert isinstance(call["index"], int)
            assert isinstance(call.get("id", ""), str)
            assert call.get("type", "function") == "function"
            assert isinstance(call["function"].get("name", ""), str)
            assert isinstance(call["function"].get("arguments", ""), str)


def assemble(chunks: list[JSON]) -> JSON:
    """What an OpenAI SDK client would rebuild from the chunks (choice 0)."""
    out: JSON = {"role": None, "content": "", "tool_calls": {}, "finish_reason": None,
                 "usage": None, "finish_count": 0}
    for chunk in chunks:
        check_chunk(chunk)
        if not chunk["choices"]:
            out["usage"] = {k: chunk["usage"][k]
                            for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
            continue
        choice = chunk["choices"][0]
        delta = choice["delta"]
        out["role"] = out["role"] or delta.get("role")
        out["content"] += delta.get("content") or ""
        for call in delta.get("tool_calls") or []:
            slot = out["tool_calls"].setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
            slot["id"] += call.get("id", "")
            slot["name"] += call["function"].get("name", "")
            slot["arguments"] += call["function"].get("arguments", "")
        if choice["finish_reason"]:
            out["finish_reason"] = choice["finish_reason"]
            out["finish_count"] += 1
    out["tool_calls"] = [
        {"name": c["name"], "arguments": json.loads(c["arguments"]), "has_id": bool(c["id"])}
        for _, c in sorted(out["tool_calls"].items())
    ]
    return out


def completion_view(completion: JSON) -> JSON:
    """The parts of a ``chat.completion`` that must not depend on the provider."""
    choices = []
    for choice in completion["choices"]:
        message = choice["message"]
        calls = [
            {"name": c["function"]["name"], "arguments": json.loads(c["function"]["arguments"]),
             "type": c["type"], "has_id": bool(c["id"])}
            for c in message.get("tool_calls") or []
        ]
        choices.append({"index": choice["index"], "finish_reason": choice["finish_reason"],
                        "role": message["role"], "content": message["content"],
                        "tool_calls": calls})
    usage = completion["usage"]
    return {"object": completion["object"], "model": completion["model"], "choices": choices,
            "usage": {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}}


def test_check_chunk_refuses_malformed_chunks() -> None:
    good = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]}
    check_chunk(good)
    for bad in (
        {**good, "object": "chat.completion"},
        {**good, "choices": [{"index": 0, "delta": {"content": 1}, "finish_reason": None}]},
        {**good, "choices": [{"index": 0, "delta": {}, "finish_reason": "done"}]},
        {**good, "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1,
                                          "total_tokens": 3}},
    ):
        try:
            check_chunk(bad)
        except (AssertionError, KeyError):
            continue
        raise AssertionError(f"accepted malformed chunk {bad}")
