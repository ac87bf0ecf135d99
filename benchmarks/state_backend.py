"""Added latency of shared state per request (Redis vs memory), and of a cache hit.

Per request the gateway checks the key's limits, reserves the estimate, and settles the bill:
three state operations. This times that sequence, one request after another (latency, not
throughput), on uvloop when installed as in a gateway worker, through ``router.state.build_state`` exactly as configured (Redis behind the
failover guard), against a ``redis-server`` it starts on a free loopback port; and the same on
the memory backend. The difference of the medians is what Redis adds to a request (goal
≤ 0.3 ms on loopback). Then a cache hit: computing the key of a one-image request and
``get`` on each store (a ~1 KB completion).

    python -m benchmarks.state_backend [--requests 3000]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable

from benchmarks.overhead import free_port
from benchmarks.span_loss import event_loop_runner
from router.cache import CachedResponse, MemoryCache, ResponseCache, cache_key, image_digest
from router.cache.redis import RedisCache
from router.config import parse_config
from router.keys import Principal
from router.state import build_state

CONFIG = """
providers: {o: {kind: openai, base_url: "http://127.0.0.1:1"}}
models: {gpt-4o: {provider: o, upstream: gpt-4o, price: {input_per_mtok: 2.5, output_per_mtok: 10},
                  image: {rule: tile, base: 85, tile: 170}}}
teams: {a: {daily_budget_usd: 1000000}}
state: {backend: BACKEND, url: "URL", timeout_s: 1.0}
"""
BODY = {"messages": [{"role": "user", "content": [
    {"type": "text", "text": "What is the total on this receipt?"},
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"}}]}],
    "temperature": 0, "max_tokens": 300}
ENTRY = CachedResponse({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "gpt-4o",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Total: 12.50 EUR. " * 40}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 900, "completion_tokens": 200, "total_tokens": 1100},
}, cost_usd=0.00425, route="gpt-4o:high", stored_at=0.0)


async def _timings(n: int, one: Callable[[int], Awaitable[object]]) -> list[float]:
    for i in range(min(200, n)):
        await one(i)  # warm-up: connections, script cache
    out = []
    for i in range(n):
        start = time.perf_counter()
        await one(i)
        out.append(time.perf_counter() - start)
    return out


def _row(name: str, samples: list[float]) -> float:
    ordered = sorted(samples)
    median = statistics.median(ordered)
    print(f"{name:<34} median {median * 1e3:7.3f} ms   p99 {ordered[int(len(ordered) * 0.99)] * 1e3:7.3f} ms")
    return median


async def _state_path(backend: str, url: str, n: int) -> float:
    state = build_state(parse_config(CONFIG.replace("BACKEND", backend).replace("URL", url)))
    principal = Principal(key_id="vk_bench", team="a", rpm=10_000_000, tpm=10_000_000_000, daily_budget_usd=1e6)

    async def one(_: int) -> None:
        await state.limits.check(principal, 1200)
        hold = await state.budgets.reserve(principal, 0.004)
        await state.budgets.settle(hold, 0.0035)

    samples = await _timings(n, one)
    await state.close()
    return _row(f"limit + reserve + settle, {backend}", samples)


async def _cache_hits(url: str, n: int) -> None:
    digest = image_digest(b"\x89PNG" + bytes(2000))
    _row("cache key (1 image)", await _timings(n, lambda _: _key(digest)))
    key = cache_key(BODY, [digest], route="gpt-4o:high", team="a")
    memory = MemoryCache(max_bytes=1 << 26, ttl_s=3600)
    redis = RedisCache(url, ttl_s=3600, max_entry_bytes=1 << 20, timeout_s=1.0)
    stores: list[tuple[ResponseCache, str]] = [(memory, "memory"), (redis, "redis")]
    for store, name in stores:
        assert await store.put(key, ENTRY)

        async def hit(_: int, store: ResponseCache = store) -> None:
            assert await store.get(key) is not None

        _row(f"cache hit ({len(ENTRY.to_bytes())} B), {name}", await _timings(n, hit))
    await redis.close()


async def _key(digest: str) -> str:
    return cache_key(BODY, [digest], route="gpt-4o:high", team="a")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.state_backend")
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args(argv)
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        print("redis-server not found: install it (apt-get install -y redis-server)")
        return
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--save", ""],
                                  stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            url = f"redis://127.0.0.1:{port}/0"
            run = event_loop_runner()  # uvloop when installed, as in a gateway worker
            memory = run(_state_path("memory", url, args.requests))
            redis = run(_state_path("redis", url, args.requests))
            print(f"added by Redis per request (median difference): {(redis - memory) * 1e3:.3f} ms (goal <= 0.3 ms)")
            run(_cache_hits(url, args.requests))
        finally:
            server.kill()
            server.wait()


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
