"""CPU per upstream request of the gateway's client, per engine, side by side in one run.

The same ``UpstreamClient.send`` (an OpenAI-style JSON body, the whole answer read) over
``engine="aiohttp"`` and ``engine="httpcore"``, against one loopback server in its own process
that answers every request with the same canned chat completion (so the server's cost is not
ours to count). Closed loop, ``--concurrency`` requests in flight, on uvloop when installed, as
in a gateway worker. CPU is this process's (``time.process_time``): what a worker would spend.

    python -m benchmarks.upstream_client [--requests 6000] [--concurrency 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import time
from typing import Any

from benchmarks.overhead import free_port
from benchmarks.span_loss import event_loop_runner, read_message

ANSWER = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "A cat on a mat."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 120, "completion_tokens": 6, "total_tokens": 126},
}).encode()
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(ANSWER)) + ANSWER


def _serve(port: int, ready: Any) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await read_message(reader)
                writer.write(RESPONSE)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(answer, "127.0.0.1", port, backlog=1024)
        ready.set()
        async with server:
            await server.serve_forever()

    event_loop_runner()(main())


async def measure(engine: str, port: int, requests: int, concurrency: int) -> tuple[float, float]:
    """(CPU ms per request, requests per second) of ``requests`` sends after a warm-up."""
    from router.providers.base import UpstreamRequest
    from router.upstream import UpstreamClient

    req = UpstreamRequest(
        method="POST", url=f"http://127.0.0.1:{port}/v1/chat/completions",
        headers={"authorization": "Bearer sk-bench", "content-type": "application/json"},
        json={"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "x" * 2000}]},
    )
    async with UpstreamClient(engine=engine, max_connections=64) as client:  # type: ignore[arg-type]
        async def worker(n: int) -> None:
            for _ in range(n):
                response = await client.send(req, connect_timeout_s=5, timeout_s=30)
                response.json()

        await asyncio.gather(*(worker(10) for _ in range(concurrency)))  # connections open, code warm
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    done = requests // concurrency * concurrency
    return 1000 * cpu / done, done / wall


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="alternate the engines this many times")
    args = parser.parse_args(argv)

    ctx = multiprocessing.get_context("spawn")
    port, ready = free_port(), ctx.Event()
    server = ctx.Process(target=_serve, args=(port, ready), daemon=True)
    server.start()
    try:
        if not ready.wait(30):
            raise RuntimeError("the canned upstream did not start")
        results: dict[str, list[tuple[float, float]]] = {"aiohttp": [], "httpcore": []}
        for _ in range(args.rounds):
            for engine in results:
                results[engine].append(event_loop_runner()(measure(engine, port, args.requests, args.concurrency)))
    finally:
        server.terminate()
        server.join(10)
    print(f"{args.requests} requests per run, {args.concurrency} in flight, {args.rounds} alternating rounds")
    print(f"{'engine':<10} {'CPU ms/request':>16} {'req/s':>8}")
    best = {engine: min(runs) for engine, runs in results.items()}
    for engine, runs in results.items():
        cpu = ", ".join(f"{c:.3f}" for c, _ in runs)
        rate = ", ".join(f"{r:.0f}" for _, r in runs)
        print(f"{engine:<10} {cpu:>16} {rate:>8}")
    print(f"aiohttp / httpcore CPU per request (best of each): {best['aiohttp'][0] / best['httpcore'][0]:.2f}")


if __name__ == "__main__":
    main()
