"""Sends a generated workload through the gateway with the official ``openai`` SDK.

Each record becomes one chat request for ``aperture/auto`` carrying its prompt, its image as
a data URL, its task (``x-aperture-task``) and its reference id (``x-aperture-reference-id``),
exactly what an application that wants evaluated traffic would send.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "heic": "image/heic", "gif": "image/gif"}


@dataclass
class TrafficResult:
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    routes: dict[str, int] = field(default_factory=dict)


def request_for(record: dict[str, Any], workload_dir: Path) -> dict[str, Any]:
    data = (workload_dir / record["file"]).read_bytes()
    url = f"data:{MIME.get(record['format'], 'image/png')};base64,{base64.b64encode(data).decode()}"
    return {
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": record["prompt"]},
            {"type": "image_url", "image_url": {"url": url}},
        ]}],
        "extra_headers": {"x-aperture-task": record["task"], "x-aperture-reference-id": record["id"]},
    }


def send_workload(
    gateway_url: str,
    records: Sequence[dict[str, Any]],
    workload_dir: Path,
    *,
    model: str = "aperture/auto",
    concurrency: int = 4,
    api_key: str = "demo",
    progress: Callable[[int], None] | None = None,
) -> TrafficResult:
    client = openai.OpenAI(base_url=gateway_url + "/v1", api_key=api_key, max_retries=0, timeout=600)
    result = TrafficResult()

    def one(record: dict[str, Any]) -> tuple[str | None, str | None]:
        req = request_for(record, workload_dir)
        try:
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=req["messages"], extra_headers=req["extra_headers"], max_tokens=1024
            )
            raw.parse()
            return None, raw.headers.get("x-aperture-route")
        except openai.APIStatusError as exc:
            body = exc.body if isinstance(exc.body, dict) else {}
            return str(body.get("code") or exc.status_code), None
        except openai.APIError as exc:
            return type(exc).__name__, None

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for error, route in pool.map(one, records):
            result.sent += 1
            if error is None:
                result.ok += 1
                if route:
                    result.routes[route] = result.routes.get(route, 0) + 1
            else:
                result.errors[error] = result.errors.get(error, 0) + 1
            if progress is not None:
                progress(1)
    client.close()
    return result
