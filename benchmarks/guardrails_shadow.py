"""What shadow-mode guardrails add to a request, measured side by side through the gateway.

    python -m benchmarks.guardrails_shadow --requests 12

One gateway in front of the emulator (instant mode: no upstream OCR), two virtual keys: team
``off`` (no guardrails) and team ``shadow`` (``pii`` and ``injection`` in shadow mode, which run
the real rapidocr). Each request carries a fresh image (an OCR cache miss); the two teams
alternate, and before each timed request the previous request's shadow run is awaited (not
timed), so each number is one request's own latency, not the CPU contention of a backlog.
"""

from __future__ import annotations

import argparse
import base64
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from aperture.servers import running_app
from aperture.wiring import build_gateway_app
from emulator.testing import running_emulator
from router.config import parse_config
from router.guardrails.testset import CLEAN, render

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "emulated.yaml"
SHADOW = {"action": "shadow", "timeout_ms": 30000}


def config(emulator_url: str) -> Any:
    import yaml

    data = yaml.safe_load(EXAMPLE.read_text().replace("${APERTURE_EMULATOR_URL:-http://127.0.0.1:9100}", emulator_url))
    data["virtual_keys"] = {"sk-off": {"team": "off"}, "sk-shadow": {"team": "shadow"}}
    data["guardrails"] = {"teams": {"shadow": {"pii": SHADOW, "injection": SHADOW}}}
    return parse_config(yaml.safe_dump(data), base_dir=EXAMPLE.parent)


def body(i: int) -> dict[str, Any]:
    data = render([f"{CLEAN[i % len(CLEAN)]} #{i}", f"Contact jane{i}@example.com"], font_name="DejaVuSans.ttf",
                  size=20, angle=0, canvas=(1280, 720))
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]}]}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=12, help="timed requests per team")
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {"off": [], "shadow": []}
    with tempfile.TemporaryDirectory() as tmp, running_emulator(mode="instant", catalog=str(EXAMPLE)) as emu:
        app = build_gateway_app(config(emu), db_path=Path(tmp) / "store.duckdb")
        gateway = app.state.gateway
        with running_app(app, name="gateway") as url, httpx.Client(base_url=url, timeout=60) as client:
            for i in range(2 * args.requests + 2):
                team = ("off", "shadow")[i % 2]
                while gateway.shadow_pending:  # the previous shadow run, untimed
                    time.sleep(0.02)
                started = time.perf_counter()
                r = client.post("/v1/chat/completions", json=body(i), headers={"authorization": f"Bearer sk-{team}"})
                elapsed = (time.perf_counter() - started) * 1000
                r.raise_for_status()
                if i >= 2:  # the first pair warms the OCR model and the connections
                    times[team].append(elapsed)
            while gateway.shadow_pending:
                time.sleep(0.02)
    print("| team | requests | p50 ms | p95 ms | mean ms |")
    print("|---|---|---|---|---|")
    for team, values in times.items():
        print(f"| {team} | {len(values)} | {pct(values, 0.5):.1f} | {pct(values, 0.95):.1f} | {statistics.mean(values):.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
