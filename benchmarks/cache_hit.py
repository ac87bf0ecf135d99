"""Request → answer latency through the gateway for a response-cache hit, beside a paid request.

Two ``aperture serve`` processes on examples/replicas.yaml (state in a ``redis-server`` this
benchmark starts on loopback), one with the Redis response cache on, one with it off, in front
of the instant emulator (no model, ~0 ms upstream); the same one-image request (the ~100 KB PNG
of :mod:`benchmarks.overhead`, gpt-4o) one after another (concurrency 1: latency, not
throughput). With the cache on every timed request is a hit (the warm-up stored the entry);
with it off every request goes upstream. The client is plain HTTP/1.1 (``benchmarks.overhead.load``).

    python -m benchmarks.cache_hit [--requests 300]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from benchmarks.overhead import ROOT, free_port, image_100kb, load, start, wait_ready


def config(tmp: Path, *, cache: bool) -> Path:
    """examples/replicas.yaml with the demo key unlimited (the benchmark measures, not limits)."""
    data = yaml.safe_load((ROOT / "examples" / "replicas.yaml").read_text())
    data["virtual_keys"] = {"sk-bench": {"team": "a"}}
    data["teams"] = {"a": {"daily_budget_usd": 1_000_000.0}}
    data["cache"]["enabled"] = cache
    data["routing"]["rules_file"] = str(ROOT / "examples" / "rules" / "baseline.yaml")
    path = tmp / f"gateway-cache-{'on' if cache else 'off'}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args(argv)
    redis_bin = shutil.which("redis-server") or shutil.which("valkey-server")
    if redis_bin is None:
        sys.exit("redis-server not found (Debian: apt-get install -y redis-server)")
    tmp = Path(tempfile.mkdtemp(prefix="aperture-cache-bench-"))
    redis_port, emu_port = free_port(), free_port()
    ports = {"cache hit (Redis)": free_port(), "paid, cache off": free_port()}
    procs = [
        start([redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], cwd=tmp),
        start([sys.executable, "-m", "uvicorn", "benchmarks.span_loss:instant_emulator", "--factory", "--port", str(emu_port),
               "--log-level", "warning", "--no-access-log"], cwd=ROOT),
    ]
    env = {"APERTURE_EMULATOR_URL": f"http://127.0.0.1:{emu_port}", "APERTURE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
           "APERTURE_IMAGES__TEXT_FEATURES": "false"}
    aperture = str(Path(sys.executable).parent / "aperture")
    for name, port in ports.items():
        procs.append(start([aperture, "serve", "--config", str(config(tmp, cache=name.startswith("cache"))),
                            "--port", str(port), "--db", str(tmp / f"{port}.duckdb")], env))
    body = {"model": "gpt-4o", "max_tokens": 32, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": image_100kb(), "detail": "high"}}]}]}
    try:
        wait_ready(f"http://127.0.0.1:{emu_port}/_emulator/health")
        for port in ports.values():
            wait_ready(f"http://127.0.0.1:{port}/healthz")
        time.sleep(1)
        print(f"{'path':<20} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for name, port in ports.items():
            lat, _, errors = asyncio.run(load(port, "/v1/chat/completions", body, "sk-bench", args.requests, 1))
            print(f"{name:<20} {np.percentile(lat, 50) * 1000:8.2f} {np.percentile(lat, 99) * 1000:8.2f} {errors:7d}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)


if __name__ == "__main__":
    main()
