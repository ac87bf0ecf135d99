"""Span loss under load: every image the gateway answered for must become one ``image_spans`` row.

Goal (issue 4): 0 spans lost at 1,000 req/s for 60 s. The emulator (instant mode) and
``aperture serve`` run as their own processes, the gateway storing spans in a DuckDB file in
a temporary directory. An asyncio httpx load generator here sends requests with one small
image each at a target rate, paced open-loop but bounded by a concurrency cap (when the
gateway cannot keep up, the cap holds requests back and the achieved rate shows it). The
gateway is then stopped with SIGTERM, so its lifespan flushes the exporters, and the rows
are counted in the store: lost = images answered 200 − rows.

    python -m benchmarks.span_loss [--rate 1000] [--seconds 60] [--concurrency 128]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import httpx
import numpy as np
from PIL import Image

from benchmarks.overhead import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]


def small_image_url(side: int = 48, seed: int = 0) -> str:
    """A few-KB noise PNG as a data URL: real decoding work, negligible transfer."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    send_window_s: float = 0.0
    latencies: list[float] = field(default_factory=list)


async def run_load(url: str, body: dict, *, rate: float, seconds: float, concurrency: int) -> LoadResult:
    """Send for ``seconds``, request i due at ``i / rate``, at most ``concurrency`` in flight.

    The window is fixed, not the count: a gateway slower than the target gets fewer requests
    in the same time, and the achieved rate says so.
    """
    result = LoadResult()
    slots = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one() -> None:
            started = time.perf_counter()
            try:
                r = await client.post(url, json=body, headers={"authorization": "Bearer bench"})
                result.statuses[str(r.status_code)] += 1
                if r.status_code == 200:
                    result.ok += 1
                    result.latencies.append(time.perf_counter() - started)
            except httpx.HTTPError as exc:
                result.statuses[type(exc).__name__] += 1
            finally:
                slots.release()

        tasks = []
        t0 = time.perf_counter()
        end = t0 + seconds
        i = 0
        while True:
            due = t0 + i / rate
            if due >= end:
                break
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            if time.perf_counter() >= end:
                slots.release()
                break
            i += 1
            tasks.append(asyncio.create_task(one()))
            result.sent += 1
        result.send_window_s = time.perf_counter() - t0
        await asyncio.gather(*tasks)
        result.elapsed_s = time.perf_counter() - t0
    return result


def dropped_gauge(gateway: str) -> float | None:
    """``aperture_spans_dropped`` from the gateway's /metrics (the exporters' own count)."""
    try:
        text = httpx.get(f"{gateway}/metrics", timeout=10).text
    except httpx.HTTPError:
        return None
    match = re.search(r"^aperture_spans_dropped(?:\{[^}]*\})?\s+([0-9.eE+-]+)$", text, re.M)
    return float(match.group(1)) if match else None


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 120.0) -> int | None:
    """SIGTERM and wait: uvicorn finishes in-flight requests, then the lifespan flushes spans."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return None


def count_rows(db: Path) -> tuple[int, int]:
    with duckdb.connect(str(db), read_only=True) as conn:
        images = conn.execute("SELECT count(*) FROM image_spans").fetchone()
        requests = conn.execute("SELECT count(*) FROM request_spans").fetchone()
    return int(images[0] if images else 0), int(requests[0] if requests else 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="target requests per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to send")
    parser.add_argument("--concurrency", type=int, default=128, help="requests in flight at most")
    parser.add_argument("--model", default="gpt-4o-mini")
    args = parser.parse_args(argv)

    aperture = str(Path(sys.executable).parent / "aperture")
    tmp = Path(tempfile.mkdtemp(prefix="aperture-spanloss-"))
    db = tmp / "spans.duckdb"
    emu_port, gw_port = free_port(), free_port()
    emulator_url, gateway = f"http://127.0.0.1:{emu_port}", f"http://127.0.0.1:{gw_port}"
    env = {**os.environ, "APERTURE_EMULATOR_URL": emulator_url, "APERTURE_IMAGES__TEXT_FEATURES": "false"}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    env.pop("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", None)
    emu_log, gw_log = (tmp / "emulator.log").open("wb"), (tmp / "gateway.log").open("wb")
    emulator = subprocess.Popen([aperture, "emulate", "--mode", "instant", "--port", str(emu_port), "--ocr-workers", "1"],
                                env=env, stdout=emu_log, stderr=subprocess.STDOUT)
    gw = subprocess.Popen([aperture, "serve", "--config", str(ROOT / "examples" / "emulated.yaml"), "--port", str(gw_port),
                           "--db", str(db)], env=env, stdout=gw_log, stderr=subprocess.STDOUT)
    body = {"model": args.model, "max_tokens": 16, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": small_image_url(), "detail": "low"}}]}]}
    try:
        wait_ready(f"{emulator_url}/_emulator/health")
        wait_ready(f"{gateway}/healthz")
        print(f"target {args.rate:.0f} req/s for {args.seconds:.0f} s, concurrency ≤ {args.concurrency}, "
              f"1 image per request, store {db}")
        load = asyncio.run(run_load(f"{gateway}/v1/chat/completions", body,
                                    rate=args.rate, seconds=args.seconds, concurrency=args.concurrency))
        dropped = dropped_gauge(gateway)
        t = time.perf_counter()
        gw_exit = stop(gw)
        shutdown_s = time.perf_counter() - t
    finally:
        stop(gw, 10)
        stop(emulator, 10)
        emu_log.close()
        gw_log.close()
    rows, request_rows = count_rows(db)
    lost = load.ok - rows
    achieved = load.sent / load.send_window_s if load.send_window_s else 0.0
    answered = load.ok / load.elapsed_s if load.elapsed_s else 0.0
    lat = np.array(load.latencies) * 1000 if load.latencies else np.zeros(1)
    print(f"{'':<22} {'target':>10} {'achieved':>10}")
    print(f"{'rate (req/s)':<22} {args.rate:10.0f} {achieved:10.0f}   (sent over the send window; 200s/s overall {answered:.0f})")
    print(f"{'duration (s)':<22} {args.seconds:10.1f} {load.elapsed_s:10.1f}   (send window {load.send_window_s:.1f})")
    print(f"latency ms p50 {np.percentile(lat, 50):.1f}  p99 {np.percentile(lat, 99):.1f}")
    print(f"statuses: {dict(load.statuses)}")
    # uvicorn re-raises the SIGTERM it caught once its shutdown (lifespan included) is done.
    how = "clean" if gw_exit in (0, -signal.SIGTERM) else "NOT clean"
    print(f"gateway stopped by SIGTERM in {shutdown_s:.1f} s, exit {gw_exit} ({how}); aperture_spans_dropped = {dropped}")
    print(f"sent {load.sent}  ok {load.ok}  image rows {rows}  request rows {request_rows}  lost {lost}")
    # Rows above ``ok`` (never above ``sent``) are requests the gateway finished after the client gave up.
    if load.ok <= rows <= load.sent:
        print("PASS: 0 spans lost")
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"FAIL: {lost} image spans lost; store and logs kept in {tmp}")


if __name__ == "__main__":
    main()
