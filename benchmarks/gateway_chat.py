"""``Gateway.chat`` alone, in process: the pipeline's own cost per request, no HTTP on either side.

The upstream is an ``httpx.MockTransport`` answering at once; the body is parsed from bytes
each time as the handler does (``router.surface.parse_json``). Spans go to DuckDB as in
``aperture serve``; text features are off. Latency here is CPU time on the event loop.

    python -m benchmarks.gateway_chat [--requests 1500] [--image-kb 0] [--profile]
        [--pace-ms 1] [--span-conversion process|thread]

``--pace-ms`` leaves the event loop idle between requests, as a server waiting on its socket
is, so the span exporter's thread runs in the gaps and a request that starts while it holds
the GIL waits for it (the tail this measures).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

from benchmarks.overhead import image_100kb, image_of_size

ROOT = Path(__file__).resolve().parents[1]
ANSWER = json.dumps({
    "id": "c", "object": "chat.completion", "created": 0, "model": "gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 800, "completion_tokens": 2, "total_tokens": 802},
}).encode()


def answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=ANSWER, headers={"content-type": "application/json"})


async def run(requests: int, image: str, profile: bool, pace_s: float = 0.0, span_conversion: str = "process") -> np.ndarray:
    from aperture.wiring import build_gateway_app
    from router.config import parse_config
    from router.surface import parse_json

    os.environ.setdefault("OPENAI_API_KEY", "unused")
    example = ROOT / "examples" / "emulated.yaml"
    data = yaml.safe_load(example.read_text().replace("${APERTURE_EMULATOR_URL:-http://127.0.0.1:9100}", "http://127.0.0.1:9"))
    data.setdefault("images", {})["text_features"] = False
    data.setdefault("telemetry", {})["span_conversion"] = span_conversion
    config = parse_config(yaml.safe_dump(data), base_dir=example.parent)
    app = build_gateway_app(config, db_path=Path(tempfile.mkdtemp(prefix="aperture-chat-")) / "store.duckdb",
                            upstream_transport=httpx.MockTransport(answer))
    raw = json.dumps({"model": "gpt-4o", "max_tokens": 32, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": image, "detail": "high"}}]}]}).encode()
    headers = {"authorization": "Bearer emulator-key"}
    async with app.router.lifespan_context(app):
        gateway = app.state.gateway
        for _ in range(min(50, requests)):
            await gateway.chat(parse_json(raw, 64), headers)
        profiler = cProfile.Profile() if profile else None
        latencies = []
        if profiler:
            profiler.enable()
        for _ in range(requests):
            t = time.perf_counter()
            await gateway.chat(parse_json(raw, 64), headers)
            latencies.append(time.perf_counter() - t)
            if pace_s:
                await asyncio.sleep(pace_s)
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    return np.array(latencies) * 1000


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--image-kb", type=int, default=0, help="a noise PNG of this size instead of the ~133 KB one")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top 40 by cumulative time")
    parser.add_argument("--pace-ms", type=float, default=0.0, help="idle time between requests")
    parser.add_argument("--span-conversion", choices=("process", "thread"), default="process",
                        help="where spans become rows (telemetry.span_conversion)")
    args = parser.parse_args(argv)
    image = image_of_size(args.image_kb << 10) if args.image_kb else image_100kb()
    ms = asyncio.run(run(args.requests, image, args.profile, args.pace_ms / 1000, args.span_conversion))
    print(f"image {len(image) * 3 // 4 / 1024:.0f} KB, {args.requests} requests: Gateway.chat p50 "
          f"{np.percentile(ms, 50):.3f} ms, p99 {np.percentile(ms, 99):.3f} ms, p99.9 "
          f"{np.percentile(ms, 99.9):.3f} ms, mean {ms.mean():.3f} ms, > 3 ms: {(ms > 3).mean():.2%}")


if __name__ == "__main__":
    main()
