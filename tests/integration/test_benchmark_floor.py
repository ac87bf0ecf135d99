"""The overhead benchmark's reference targets: the pass-through floor forwards bytes untouched, and
the gateway without a store is the same gateway with no embedded store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from benchmarks.overhead import config_without_store
from benchmarks.passthrough import Passthrough, read_body
from emulator.testing import running_app
from router.config import load_config


class Recorder:
    """An upstream that keeps what it was sent and answers with a set status and body."""

    def __init__(self, status: int, answer: bytes) -> None:
        self.status, self.answer = status, answer
        self.seen: list[tuple[str, str, bytes, dict[bytes, bytes]]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = bytes(await read_body(receive))
        self.seen.append((scope["method"], scope["path"], body, dict(scope["headers"])))
        await send({"type": "http.response.start", "status": self.status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": self.answer})


def test_passthrough_forwards_the_body_byte_for_byte_and_returns_the_upstream_answer() -> None:
    # Escapes, non-ASCII and a long base64-like run: nothing may be re-serialised on the way.
    body = ('{"model":"gpt-4o", "messages":[{"content":"caf\\u00e9 \\"q\\" é"}],\n "x":"' + "QUJD" * 40_000 + '"}').encode()
    upstream = Recorder(429, b'{"error":{"code":"rate_limit_exceeded"}}')
    with running_app(upstream, name="upstream") as upstream_url, running_app(Passthrough(upstream_url), name="floor") as floor_url:
        response = httpx.post(f"{floor_url}/v1/chat/completions", content=body, timeout=30,
                              headers={"authorization": "Bearer k-1", "content-type": "application/json", "x-other": "no"})
        health = httpx.get(f"{floor_url}/healthz", timeout=10)
    assert response.status_code == 429
    assert response.content == upstream.answer
    assert health.status_code == 200 and len(upstream.seen) == 1
    method, path, sent, headers = upstream.seen[0]
    assert (method, path, sent) == ("POST", "/v1/chat/completions", body)
    assert headers[b"authorization"] == b"Bearer k-1" and b"x-other" not in headers


def test_config_without_store_is_the_example_with_no_embedded_store(tmp_path: Path) -> None:
    example = load_config(Path(__file__).resolve().parents[2] / "examples" / "emulated.yaml")
    bare = load_config(config_without_store(tmp_path))
    assert bare.telemetry.db_path is None
    assert example.telemetry.db_path is not None
    # Everything else is the example's, the rules file included (found from another folder).
    assert json.loads(bare.model_dump_json(exclude={"telemetry", "routing", "base_dir"})) == json.loads(
        example.model_dump_json(exclude={"telemetry", "routing", "base_dir"}))
    assert bare.resolve_config_path(bare.routing.rules_file) == example.resolve_config_path(example.routing.rules_file)
