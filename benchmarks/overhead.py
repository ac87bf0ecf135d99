"""Added latency and throughput of the gateway, side by side with a direct call and with LiteLLM.

Three targets answer the same request (one ~100 KB PNG + a short prompt, gpt-4o):

- ``direct``: the emulator in instant mode (no model), called straight;
- ``aperture``: ``aperture serve`` in front of that emulator (DuckDB spans on);
- ``litellm``: LiteLLM's proxy in front of the same emulator, installed into its own
  virtualenv by this benchmark (skipped with a note if it cannot be installed).

Each runs as its own process; the load generator (httpx, asyncio, concurrency 32) runs here.
Added latency = percentile(target) − percentile(direct), measured in the same run.

    python -m benchmarks.overhead [--requests 2000] [--concurrency 32] [--no-litellm]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
LITELLM_VENV = Path(os.environ.get("APERTURE_CACHE_DIR", Path.home() / ".cache" / "aperture")) / "litellm-venv"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def image_100kb() -> str:
    rng = random.Random(0)
    img = Image.new("RGB", (400, 300), "white")
    px = img.load()
    for _ in range(40000):
        px[rng.randrange(400), rng.randrange(300)] = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def wait_ready(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def start(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def load(url: str, body: dict, headers: dict[str, str], n: int, concurrency: int) -> tuple[np.ndarray, float, int]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        queue = list(range(n))

        async def worker() -> None:
            nonlocal errors
            while queue:
                queue.pop()
                t = time.perf_counter()
                r = await client.post(url, json=body, headers=headers)
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors += 1

        for _ in range(min(50, n)):  # warm-up
            await client.post(url, json=body, headers=headers)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return np.array(latencies), n / elapsed, errors


def ensure_litellm() -> Path | None:
    exe = LITELLM_VENV / "bin" / "litellm"
    if exe.exists():
        return exe
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"], check=True, timeout=900)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"litellm: could not install ({exc}); skipped")
        return None
    return exe if exe.exists() else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-litellm", action="store_true")
    args = parser.parse_args(argv)

    aperture = str(Path(sys.executable).parent / "aperture")
    emu_port, gw_port, llm_port = free_port(), free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emu_port}"
    tmp = Path(tempfile.mkdtemp(prefix="aperture-bench-"))
    procs = [start([aperture, "emulate", "--mode", "instant", "--port", str(emu_port), "--ocr-workers", "1"])]
    env = {"APERTURE_EMULATOR_URL": emulator_url, "APERTURE_DB": str(tmp / "bench.duckdb"),
           "APERTURE_IMAGES__TEXT_FEATURES": os.environ.get("APERTURE_IMAGES__TEXT_FEATURES", "false")}
    procs.append(start([aperture, "serve", "--config", str(ROOT / "examples" / "emulated.yaml"), "--port", str(gw_port)], env))
    body = {"model": "gpt-4o", "max_tokens": 32, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": image_100kb(), "detail": "high"}}]}]}
    targets = {"direct": f"{emulator_url}/v1/chat/completions", "aperture": f"http://127.0.0.1:{gw_port}/v1/chat/completions"}
    litellm_key = "sk-bench-" + os.urandom(16).hex()  # LiteLLM's proxy refuses to start without one
    keys = {"direct": "emulator-key", "aperture": "emulator-key", "litellm": litellm_key}
    try:
        wait_ready(f"{emulator_url}/_emulator/health")
        wait_ready(f"http://127.0.0.1:{gw_port}/healthz")
        if not args.no_litellm and (exe := ensure_litellm()) is not None:
            cfg = tmp / "litellm.yaml"
            cfg.write_text(f"model_list:\n  - model_name: gpt-4o\n    litellm_params:\n      model: openai/gpt-4o\n"
                           f"      api_base: {emulator_url}/v1\n      api_key: emulator-key\n")
            procs.append(start([str(exe), "--config", str(cfg), "--port", str(llm_port), "--num_workers", "1"],
                               {"LITELLM_MASTER_KEY": litellm_key}))
            try:
                wait_ready(f"http://127.0.0.1:{llm_port}/health/liveliness", timeout_s=180)
                targets["litellm"] = f"http://127.0.0.1:{llm_port}/v1/chat/completions"
            except RuntimeError as exc:
                print(f"litellm: {exc}; skipped")
        results = {}
        for name, url in targets.items():
            lat, rps, errors = asyncio.run(load(url, body, {"authorization": f"Bearer {keys[name]}"}, args.requests, args.concurrency))
            results[name] = (np.percentile(lat, 50) * 1000, np.percentile(lat, 99) * 1000, rps, errors)
        p50d, p99d = results["direct"][0], results["direct"][1]
        print(f"{'target':<10} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>7} {'added p50':>10} {'added p99':>10}")
        for name, (p50, p99, rps, errors) in results.items():
            print(f"{name:<10} {p50:8.2f} {p99:8.2f} {rps:8.0f} {errors:7d} {p50 - p50d:10.2f} {p99 - p99d:10.2f}")
        if "litellm" in results:
            a = results["aperture"][0] - p50d
            litellm_added = results["litellm"][0] - p50d
            print(f"LiteLLM adds {litellm_added / a:.1f}× the p50 latency Aperture adds" if a > 0 else "Aperture adds no measurable p50 latency")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
