"""Peak memory of one large-image request in the gateway process: goal ≤ 3× the payload (issue 2).

Measuring in-process would mix the client's copies of the body with the gateway's, so the
gateway runs as its own ``aperture serve`` process (one fresh process per image size, in front
of the emulator in instant mode). Its resident set is read from ``/proc/<pid>/status``:
``VmRSS`` just before the request (after a small warm-up request, so imports and lazy
set-up are already paid for), then the peak during the request, from ``VmHWM`` reset through
``/proc/<pid>/clear_refs`` when the kernel allows it and from ``VmRSS`` polled every
millisecond in any case. Payload = the image's bytes; the request body (base64 in JSON) is
about 4/3 of that and is shown beside it.

    python -m benchmarks.memory [--sizes-mb 20 5] [--model gpt-4o] [--detail high]
"""

from __future__ import annotations

import argparse
import base64
import io
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from benchmarks.overhead import free_port, wait_ready
from benchmarks.span_loss import small_image_url, stop

ROOT = Path(__file__).resolve().parents[1]
GOAL = 3.0


def noise_png(target_bytes: int, seed: int = 0) -> bytes:
    """A PNG of random pixels (incompressible), square, about ``target_bytes`` long."""
    side = math.ceil(math.sqrt(target_bytes / 3))
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def status_kb(pid: int, key: str) -> int:
    """One ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0, ``echo 5 > clear_refs``); False when not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Measurement:
    payload: int
    body: int
    status: int
    baseline_kb: int
    peak_kb: int
    seconds: float

    @property
    def ratio(self) -> float:
        return (self.peak_kb - self.baseline_kb) * 1024 / self.payload


def chat_body(url: str, model: str, detail: str) -> dict:
    return {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": url, "detail": detail}}]}]}


def measure(gateway: str, pid: int, image: bytes, *, model: str, detail: str) -> Measurement:
    content = httpx.Request("POST", "/", json=chat_body(
        "data:image/png;base64," + base64.b64encode(image).decode(), model, detail)).content
    headers = {"authorization": "Bearer bench", "content-type": "application/json"}
    httpx.post(f"{gateway}/v1/chat/completions", json=chat_body(small_image_url(), model, detail),
               headers=headers, timeout=60).raise_for_status()
    time.sleep(1.0)  # let the warm-up's spans export
    baseline = status_kb(pid, "VmRSS")
    hwm_ok = reset_peak(pid)
    outcome: dict[str, int] = {}

    def send() -> None:
        r = httpx.post(f"{gateway}/v1/chat/completions", content=content, headers=headers, timeout=300)
        outcome["status"] = r.status_code

    thread = threading.Thread(target=send)
    started = time.perf_counter()
    thread.start()
    peak = baseline
    while thread.is_alive():
        peak = max(peak, status_kb(pid, "VmRSS"))
        time.sleep(0.001)
    thread.join()
    elapsed = time.perf_counter() - started
    if hwm_ok:
        peak = max(peak, status_kb(pid, "VmHWM"))
    return Measurement(len(image), len(content), outcome.get("status", 0), baseline, peak, elapsed)


def run_one(size_mb: float, *, model: str, detail: str, text_features: bool, emulator_url: str, tmp: Path) -> Measurement:
    """A fresh gateway process per size, so one measurement's freed-but-kept heap does not hide the next."""
    aperture = str(Path(sys.executable).parent / "aperture")
    port = free_port()
    env = {**os.environ, "APERTURE_EMULATOR_URL": emulator_url,
           "APERTURE_IMAGES__TEXT_FEATURES": "true" if text_features else "false"}
    with (tmp / f"gateway-{size_mb:g}mb.log").open("wb") as log:
        gw = subprocess.Popen([aperture, "serve", "--config", str(ROOT / "examples" / "emulated.yaml"),
                               "--port", str(port), "--db", str(tmp / f"mem-{size_mb:g}.duckdb")],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        gateway = f"http://127.0.0.1:{port}"
        wait_ready(f"{gateway}/healthz")
        image = noise_png(int(size_mb * 1_000_000))
        return measure(gateway, gw.pid, image, model=model, detail=detail)
    finally:
        stop(gw, 30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[20.0, 5.0], help="image sizes in MB (10^6 bytes)")
    parser.add_argument("--model", default="gpt-4o")
    parser.add_argument("--detail", default="high")
    parser.add_argument("--no-text-features", action="store_true", help="turn off the text-height feature (on by default)")
    args = parser.parse_args(argv)

    aperture = str(Path(sys.executable).parent / "aperture")
    tmp = Path(tempfile.mkdtemp(prefix="aperture-memory-"))
    emu_port = free_port()
    emulator_url = f"http://127.0.0.1:{emu_port}"
    with (tmp / "emulator.log").open("wb") as log:
        emulator = subprocess.Popen([aperture, "emulate", "--mode", "instant", "--port", str(emu_port), "--ocr-workers", "1"],
                                    stdout=log, stderr=subprocess.STDOUT)
    results: list[Measurement] = []
    try:
        wait_ready(f"{emulator_url}/_emulator/health")
        for size in args.sizes_mb:
            results.append(run_one(size, model=args.model, detail=args.detail, text_features=not args.no_text_features,
                                   emulator_url=emulator_url, tmp=tmp))
    finally:
        stop(emulator, 10)
    if all(m.status == 200 for m in results):
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"a request failed; logs kept in {tmp}")
    print(f"gateway process RSS around one request ({args.model}, detail {args.detail}, "
          f"text features {'off' if args.no_text_features else 'on'}); goal peak − baseline ≤ {GOAL:.0f}× payload")
    print(f"{'payload MB':>10} {'body MB':>8} {'status':>6} {'base MB':>8} {'peak MB':>8} {'Δ MB':>7} {'Δ/payload':>9} "
          f"{'goal':>5} {'secs':>6}")
    for m in results:
        delta = (m.peak_kb - m.baseline_kb) / 1024
        verdict = "ok" if m.ratio <= GOAL and m.status == 200 else "MISS"
        print(f"{m.payload / 1e6:10.2f} {m.body / 1e6:8.2f} {m.status:6d} {m.baseline_kb / 1024:8.1f} "
              f"{m.peak_kb / 1024:8.1f} {delta:7.1f} {m.ratio:8.2f}× {verdict:>5} {m.seconds:6.2f}")


if __name__ == "__main__":
    main()
