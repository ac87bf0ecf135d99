"""Added latency and throughput of the gateway, side by side with a direct call and with LiteLLM.

The targets answer the same request (one ~100 KB PNG + a short prompt, gpt-4o):

- ``direct``: the emulator in instant mode (no model), called straight;
- ``floor``: ``benchmarks.passthrough`` in front of that emulator, the gateway's HTTP stacks
  (uvicorn + aiohttp) forwarding the bytes and nothing else: what any Python gateway built on
  them adds here before doing any work;
- ``aperture``: ``aperture serve [--workers N]`` in front of that emulator (DuckDB spans on;
  with N > 1 through the collector ``serve`` starts);
- ``no-store``: the same gateway with ``telemetry.db_path: null`` (spans made, none written):
  the difference from ``aperture`` is what the embedded store costs the requests;
- ``litellm``: LiteLLM's proxy in front of the same emulator, installed into its own
  virtualenv by this benchmark (skipped with a note if it cannot be installed).

Each runs as its own process(es); the load generator (plain HTTP/1.1 keep-alive connections on
asyncio, closed loop, concurrency 32) runs here, one target after the other.
Added latency = percentile(target) − percentile(direct), measured in the same run.

    python -m benchmarks.overhead [--requests 2000] [--concurrency 32] [--no-litellm]
        [--gateway-workers 1] [--emulator-workers 1] [--image-kb N]
        [--only floor aperture no-store litellm] [--aperture PATH]

``--concurrency 1`` measures sequential added latency; ``--image-kb`` swaps the ~133 KB PNG for
a noise PNG of that size.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from aperture.servers import listen_port

ROOT = Path(__file__).resolve().parents[1]
LITELLM_VENV = Path(os.environ.get("APERTURE_CACHE_DIR", Path.home() / ".cache" / "aperture")) / "litellm-venv"


def free_port() -> int:
    """A free loopback port below the ephemeral range (``aperture.servers.listen_port``): each
    server here is polled by ``wait_ready`` before it listens."""
    return listen_port("127.0.0.1")


def image_100kb() -> str:
    rng = random.Random(0)
    img = Image.new("RGB", (400, 300), "white")
    px = img.load()
    assert px is not None
    for _ in range(40000):
        px[rng.randrange(400), rng.randrange(300)] = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_of_size(nbytes: int) -> str:
    """A PNG data URL of about ``nbytes`` (incompressible noise, so the size is the payload)."""
    side = max(8, int((nbytes / 3) ** 0.5))
    pixels = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)
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


def start(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def load(port: int, path: str, body: dict, token: str, n: int, concurrency: int) -> tuple[np.ndarray, float, int]:
    """``n`` requests over ``concurrency`` keep-alive connections, closed loop, after 50 to warm up.

    Plain HTTP/1.1 on asyncio streams (request bytes encoded once): an httpx client spent ~3 ms
    of CPU per request here, on the same 2 cores as the servers it measures.
    """
    from benchmarks.span_loss import http_request, read_response

    request = http_request(port, path, body, token)
    latencies: list[float] = []
    errors = 0
    remaining = n

    async def worker(count: int | None) -> None:
        nonlocal errors, remaining
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while (remaining > 0) if count is None else count > 0:
                if count is None:
                    remaining -= 1
                else:
                    count -= 1
                t = time.perf_counter()
                writer.write(request)
                status, keep = await read_response(reader)
                if count is None:
                    latencies.append(time.perf_counter() - t)
                    errors += status != 200
                if not keep:
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    await worker(min(50, n))  # warm-up
    started = time.perf_counter()
    await asyncio.gather(*(worker(None) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    return np.array(latencies), n / elapsed, errors


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and every process under it (Linux ``/proc``): the
    gateway's cost per request, which unlike latency does not move with the machine's load."""
    total, todo = 0.0, [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


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


def config_without_store(tmp: Path) -> Path:
    """``examples/emulated.yaml`` with no embedded store (``telemetry.db_path: null``), written to
    ``tmp``; its rules file is named by absolute path, since relative ones resolve from the file."""
    import yaml

    source = ROOT / "examples" / "emulated.yaml"
    data = yaml.safe_load(source.read_text())
    data["telemetry"]["db_path"] = None
    data["routing"]["rules_file"] = str(source.parent / data["routing"]["rules_file"])
    path = tmp / "no-store.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--gateway-workers", type=int, default=1, help="aperture serve --workers (above 1: + collector)")
    parser.add_argument("--emulator-workers", type=int, default=1, help="emulator processes")
    parser.add_argument("--image-kb", type=int, default=0, help="a noise PNG of this size instead of the ~133 KB one")
    parser.add_argument("--only", nargs="*", default=None, help="targets to measure (direct is always measured)")
    parser.add_argument("--aperture", default=str(Path(sys.executable).parent / "aperture"),
                        help="the aperture executable (another checkout's, for a before/after run)")
    args = parser.parse_args(argv)

    aperture = args.aperture
    emu_port, gw_port, llm_port = free_port(), free_port(), free_port()
    emulator_url = f"http://127.0.0.1:{emu_port}"
    tmp = Path(tempfile.mkdtemp(prefix="aperture-bench-"))
    procs = [start([sys.executable, "-m", "uvicorn", "benchmarks.span_loss:instant_emulator", "--factory", "--port", str(emu_port),
                    "--workers", str(args.emulator_workers), "--log-level", "warning", "--no-access-log"], cwd=ROOT)]
    env = {"APERTURE_EMULATOR_URL": emulator_url, "APERTURE_DB": str(tmp / "bench.duckdb"),
           "APERTURE_IMAGES__TEXT_FEATURES": os.environ.get("APERTURE_IMAGES__TEXT_FEATURES", "false")}
    procs.append(start([aperture, "serve", "--config", str(ROOT / "examples" / "emulated.yaml"), "--port", str(gw_port),
                        "--workers", str(args.gateway_workers)], env))

    def wanted(name: str) -> bool:
        return args.only is None or name in args.only

    targets = {"direct": f"{emulator_url}/v1/chat/completions"}
    pids = {"direct": procs[0].pid}
    if wanted("floor"):
        floor_port = free_port()
        procs.append(start([sys.executable, "-m", "benchmarks.passthrough", "--port", str(floor_port)],
                           {"APERTURE_EMULATOR_URL": emulator_url}, cwd=ROOT))
        targets["floor"], pids["floor"] = f"http://127.0.0.1:{floor_port}/v1/chat/completions", procs[-1].pid
    targets["aperture"], pids["aperture"] = f"http://127.0.0.1:{gw_port}/v1/chat/completions", procs[1].pid
    if wanted("no-store") and args.gateway_workers == 1:
        bare_port = free_port()
        procs.append(start([aperture, "serve", "--config", str(config_without_store(tmp)), "--port", str(bare_port)],
                           {k: v for k, v in env.items() if k != "APERTURE_DB"}))
        targets["no-store"], pids["no-store"] = f"http://127.0.0.1:{bare_port}/v1/chat/completions", procs[-1].pid
    image = image_of_size(args.image_kb << 10) if args.image_kb else image_100kb()
    body = {"model": "gpt-4o", "max_tokens": 32, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": image, "detail": "high"}}]}]}
    litellm_key = "sk-bench-" + os.urandom(16).hex()  # LiteLLM's proxy refuses to start without one
    keys = {"direct": "emulator-key", "floor": "emulator-key", "aperture": "emulator-key", "no-store": "emulator-key",
            "litellm": litellm_key}
    try:
        wait_ready(f"{emulator_url}/_emulator/health")
        for name, url in targets.items():
            if name != "direct":
                wait_ready(str(httpx.URL(url).copy_with(path="/healthz")))
        if not args.no_litellm and (exe := ensure_litellm()) is not None:
            cfg = tmp / "litellm.yaml"
            cfg.write_text(f"model_list:\n  - model_name: gpt-4o\n    litellm_params:\n      model: openai/gpt-4o\n"
                           f"      api_base: {emulator_url}/v1\n      api_key: emulator-key\n")
            procs.append(start([str(exe), "--config", str(cfg), "--port", str(llm_port), "--num_workers", "1"],
                               {"LITELLM_MASTER_KEY": litellm_key}))
            try:
                wait_ready(f"http://127.0.0.1:{llm_port}/health/liveliness", timeout_s=180)
                targets["litellm"] = f"http://127.0.0.1:{llm_port}/v1/chat/completions"
                pids["litellm"] = procs[-1].pid
            except RuntimeError as exc:
                print(f"litellm: {exc}; skipped")
        time.sleep(2)  # every worker up, not just the first
        results = {}
        cpu_ms: dict[str, float] = {}
        print(f"image {len(image) * 3 // 4 / 1024:.0f} KB, "
              f"concurrency {args.concurrency}, {args.requests} requests")
        for name, url in targets.items():
            if name != "direct" and not wanted(name):
                continue
            target = httpx.URL(url)
            before = cpu_seconds(pids[name])
            lat, rps, errors = asyncio.run(load(target.port or 80, target.path, body, keys[name], args.requests, args.concurrency))
            cpu_ms[name] = (cpu_seconds(pids[name]) - before) / (args.requests + min(50, args.requests)) * 1000
            results[name] = (np.percentile(lat, 50) * 1000, np.percentile(lat, 99) * 1000, rps, errors)
        p50d, p99d = results["direct"][0], results["direct"][1]
        print(f"{'target':<10} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>7} {'added p50':>10} {'added p99':>10}"
              f" {'CPU ms/req':>11}")
        for name, (p50, p99, rps, errors) in results.items():
            print(f"{name:<10} {p50:8.2f} {p99:8.2f} {rps:8.0f} {errors:7d} {p50 - p50d:10.2f} {p99 - p99d:10.2f}"
                  f" {cpu_ms[name]:11.2f}")
        if "floor" in results and "aperture" in results:
            floor_p50, own_p50 = results["floor"][0] - p50d, results["aperture"][0] - results["floor"][0]
            print(f"of Aperture's added p50, the HTTP stacks' floor is {floor_p50:.2f} ms and its own work {own_p50:.2f} ms")
        if "no-store" in results and "aperture" in results:
            print(f"the embedded store adds {results['aperture'][0] - results['no-store'][0]:.2f} ms at p50 and "
                  f"{results['aperture'][1] - results['no-store'][1]:.2f} ms at p99")
        if "litellm" in results and "aperture" in results:
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
