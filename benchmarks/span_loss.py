"""Span loss under load: every image the gateway answered for must become one ``image_spans`` row.

Goal (issue 4): 0 spans lost at 1,000 req/s for 60 s. Three sets of processes share the machine:

- the upstream: by default (``--upstream replay``) a stand-in that sends the emulator's answer to
  the first request back for every request (they are all the same request; see
  :func:`serve_replay` for why); ``--upstream emulator``: the emulator in instant mode (no model)
  under uvicorn, ``--emulator-workers`` processes, answers every request;
- ``aperture serve --workers N``: N gateway processes exporting OTLP to the collector that
  ``serve`` starts, the store's only writer (``--gateway-workers 1``: one process writing DuckDB
  itself);
- the load generator, ``--load-processes`` processes. Each keeps plain HTTP/1.1 keep-alive
  connections (request bytes encoded once, responses read by Content-Length), because an httpx
  client spent ~3 ms of CPU per request here, more than the gateway under test.

Request i (over all load processes) is due at i / rate; each connection sends its next request
when it is due and the previous answer is in, so ``--concurrency`` caps what is in flight and a
gateway slower than the target gets fewer requests in the same window (the achieved rate says so).
Then ``serve`` gets SIGTERM (workers finish and flush into the collector, which then drains into
DuckDB) and the rows are counted: lost = images answered 200 − rows. CPU seconds per process
group over the load window say where the time went.

``--kill-collector``: halfway through the load, ``kill -9`` the collector ``serve`` started;
``serve`` restarts it, the workers spool meanwhile and replay, and the count at the end must
still be 0 lost (the restart count is read from the collector's /healthz).

    python -m benchmarks.span_loss [--rate 1000] [--seconds 60] [--gateway-workers 2]
        [--emulator-workers 1] [--load-processes 2] [--concurrency 128] [--upstream replay|emulator]
        [--kill-collector]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
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


def instant_emulator() -> Any:
    """uvicorn app factory: the emulator in instant mode, so it can run with ``--workers``."""
    from emulator.server import create_emulator_app

    return create_emulator_app(mode="instant", catalog=str(ROOT / "examples" / "emulated.yaml"))


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    send_window_s: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def merge(self, other: LoadResult) -> None:
        self.sent += other.sent
        self.ok += other.ok
        self.statuses.update(other.statuses)
        self.elapsed_s = max(self.elapsed_s, other.elapsed_s)
        self.send_window_s = max(self.send_window_s, other.send_window_s)
        self.latencies += other.latencies


def http_request(port: int, path: str, body: dict[str, Any], token: str = "bench") -> bytes:
    payload = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
            f"authorization: Bearer {token}\r\ncontent-length: {len(payload)}\r\n\r\n")
    return head.encode() + payload


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep-alive) of one HTTP/1.1 response, its body read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    return status, headers.get("connection", "").lower() != "close"


async def drive(port: int, request: bytes, *, rate: float, seconds: float, connections: int,
                offset: int, stride: int) -> LoadResult:
    """This process's share: global request indices ``offset, offset + stride, …``."""
    result = LoadResult()
    t0 = time.perf_counter()
    end = t0 + seconds
    counter = iter(range(offset, 1 << 62, stride))

    async def connection() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while True:
            due = t0 + next(counter) / rate
            if due >= end:
                break
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            if time.perf_counter() >= end:
                break
            result.sent += 1
            started = time.perf_counter()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert reader is not None
                writer.write(request)
                status, keep = await asyncio.wait_for(read_response(reader), 60)
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
                result.statuses[type(exc).__name__] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            result.statuses[str(status)] += 1
            if status == 200:
                result.ok += 1
                result.latencies.append(time.perf_counter() - started)
            if not keep:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    result.send_window_s = min(time.perf_counter(), end) - t0
    result.elapsed_s = time.perf_counter() - t0
    return result


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one HTTP/1.1 message framed by Content-Length (what the gateway and the
    emulator send for non-streamed chat)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


async def record_answer(emulator_port: int, head: bytes, body: bytes) -> bytes:
    """The emulator's whole HTTP answer to one request, as bytes to send again."""
    reader, writer = await asyncio.open_connection("127.0.0.1", emulator_port)
    try:
        writer.write(head + body)
        answer_head, answer_body = await read_message(reader)
    finally:
        writer.close()
    if not answer_head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"the emulator refused the benchmark request: {answer_head[:200]!r}")
    return answer_head + answer_body


async def serve_replay(port: int, emulator_port: int, ready: Any) -> None:
    """The upstream stand-in: the first request goes to the emulator, and its answer is sent back,
    byte for byte, to that request and every later one.

    Why: in production the provider's CPU is someone else's. Here the emulator would take a
    fifth of the 2 cores (its FastAPI app builds each answer anew), which measures the test rig,
    not the gateway. Every request in this benchmark is identical, so the emulator's answer to
    the first is its answer to all; the gateway parses, prices and bills each one as before.
    """
    answer: asyncio.Future[bytes] | None = None

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answer
        try:
            while True:
                head, body = await read_message(reader)
                if answer is None:
                    answer = asyncio.ensure_future(record_answer(emulator_port, head, body))
                writer.write(await answer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    ready.set()
    async with server:
        await server.serve_forever()


def _replay_process(port: int, emulator_port: int, ready: Any) -> None:
    event_loop_runner()(serve_replay(port, emulator_port, ready))


def event_loop_runner() -> Any:
    """uvloop when installed: every process here takes its CPU out of the same 2 cores."""
    try:
        import uvloop

        return uvloop.run
    except ImportError:
        return asyncio.run


def _load_process(port: int, request: bytes, kw: dict[str, Any], start: Any, out: Any) -> None:
    start.wait()
    out.put(event_loop_runner()(drive(port, request, **kw)))


def run_load(port: int, path: str, body: dict[str, Any], *, rate: float, seconds: float, concurrency: int,
             processes: int = 2) -> LoadResult:
    """Send from ``processes`` processes together; ``concurrency`` connections in all."""
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(processes), ctx.Queue()
    request = http_request(port, path, body)
    procs = [
        ctx.Process(target=_load_process, args=(port, request, {
            "rate": rate, "seconds": seconds, "connections": max(1, concurrency // processes),
            "offset": i, "stride": processes}, start, out))
        for i in range(processes)
    ]
    for p in procs:
        p.start()
    total = LoadResult()
    for _ in procs:
        total.merge(out.get(timeout=seconds + 600))
    for p in procs:
        p.join(30)
    return total


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
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


def process_cpu_s(pid: int) -> dict[int, tuple[str, float]]:
    """CPU seconds of ``pid`` and each live descendant, by role. Under ``serve --workers`` the
    collector is the child in its own process group; the other spawned children are workers."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
        if p == pid:
            role = "supervisor"
        elif b"resource_tracker" in cmd:
            role = "resource tracker"
        else:
            role = "collector" if int(fields[2]) == p else "worker"  # fields[2]: process group
        out[p] = (role, (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_by_role(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds spent between two snapshots, summed per role (processes alive at the end)."""
    roles: dict[str, float] = {}
    for p, (role, sec) in after.items():
        roles[role] = roles.get(role, 0.0) + sec - before.get(p, (role, 0.0))[1]
    return roles


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 180.0) -> int | None:
    """SIGTERM and wait: workers finish in-flight requests and flush, then the collector drains."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return None


def collector_pid(pid: int) -> int | None:
    """The collector under ``serve`` (pid ``pid``): the descendant leading its own process group."""
    roles = process_cpu_s(pid)
    return next((p for p, (role, _) in roles.items() if role == "collector"), None)


def kill_collector(pid: int, after_s: float, killed: dict[str, Any]) -> threading.Timer:
    """``kill -9`` the collector ``after_s`` seconds from now; note its pid and when."""
    def kill() -> None:
        target = collector_pid(pid)
        if target is not None:
            os.kill(target, signal.SIGKILL)
            killed.update(pid=target, at=time.perf_counter())

    timer = threading.Timer(after_s, kill)
    timer.start()
    return timer


def collector_health(pid: int, timeout_s: float = 60.0) -> dict[str, Any]:
    """The (restarted) collector's /healthz, found by its listening port in /proc."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        target = collector_pid(pid)
        port = _listening_port(target) if target else None
        if port:
            try:
                return dict(httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2, trust_env=False).json())
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    return {}


def _listening_port(pid: int) -> int | None:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "0A" and parts[9] in inodes:  # LISTEN
            return int(parts[1].split(":")[1], 16)
    return None


def count_rows(db: Path) -> tuple[int, int, int]:
    """(image rows, request rows, spans recorded as dropped)."""
    with duckdb.connect(str(db), read_only=True) as conn:
        images = conn.execute("SELECT count(*) FROM image_spans").fetchone()
        requests = conn.execute("SELECT count(*) FROM request_spans").fetchone()
        dropped = conn.execute("SELECT coalesce(sum(count), 0) FROM dropped_spans").fetchone()
    return int(images[0] if images else 0), int(requests[0] if requests else 0), int(dropped[0] if dropped else 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="target requests per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to send")
    parser.add_argument("--concurrency", type=int, default=128, help="connections (requests in flight at most)")
    parser.add_argument("--gateway-workers", type=int, default=2, help="aperture serve --workers")
    parser.add_argument("--emulator-workers", type=int, default=1, help="emulator processes")
    parser.add_argument("--load-processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--upstream", choices=["replay", "emulator"], default="replay",
                        help="replay: the emulator answers the first request, a stand-in repeats that answer; "
                             "emulator: the emulator answers every request")
    parser.add_argument("--kill-collector", action="store_true",
                        help="kill -9 the collector halfway through; serve must restart it and lose nothing")
    args = parser.parse_args(argv)

    python = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="aperture-spanloss-"))
    db = tmp / "spans.duckdb"
    emu_port, gw_port, replay_port = free_port(), free_port(), free_port()
    emulator_url, gateway = f"http://127.0.0.1:{emu_port}", f"http://127.0.0.1:{gw_port}"
    upstream_url = emulator_url if args.upstream == "emulator" else f"http://127.0.0.1:{replay_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP")}
    env |= {"APERTURE_EMULATOR_URL": upstream_url, "APERTURE_IMAGES__TEXT_FEATURES": "false"}
    ctx = multiprocessing.get_context("spawn")
    replay_ready = ctx.Event()
    replay = ctx.Process(target=_replay_process, args=(replay_port, emu_port, replay_ready), daemon=True)
    if args.upstream == "replay":
        replay.start()
    emu_log, gw_log = (tmp / "emulator.log").open("wb"), (tmp / "gateway.log").open("wb")
    emulator = subprocess.Popen([python, "-m", "uvicorn", "benchmarks.span_loss:instant_emulator", "--factory",
                                 "--port", str(emu_port), "--workers", str(args.emulator_workers), "--log-level", "warning",
                                 "--no-access-log"], env=env, cwd=ROOT, stdout=emu_log, stderr=subprocess.STDOUT)
    gw = subprocess.Popen([python, "-c", "from aperture.cli import app; app()", "serve", "--config",
                           str(ROOT / "examples" / "emulated.yaml"), "--port", str(gw_port), "--db", str(db),
                           "--workers", str(args.gateway_workers)], env=env, cwd=ROOT, stdout=gw_log, stderr=subprocess.STDOUT)
    body = {"model": args.model, "max_tokens": 16, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": small_image_url(), "detail": "low"}}]}]}
    try:
        wait_ready(f"{emulator_url}/_emulator/health")
        wait_ready(f"{gateway}/healthz")
        if args.upstream == "replay" and not replay_ready.wait(30):
            raise RuntimeError("the upstream stand-in did not start")
        time.sleep(2)  # every worker up, not just the first
        print(f"target {args.rate:.0f} req/s for {args.seconds:.0f} s, ≤ {args.concurrency} connections from "
              f"{args.load_processes} load processes; gateway workers {args.gateway_workers}, emulator workers "
              f"{args.emulator_workers}; upstream: {args.upstream}; 1 image per request, store {db}")

        def upstream_cpu() -> float:
            return tree_cpu_s(replay.pid) if replay.pid else 0.0

        cpu0 = {"gateway+collector": tree_cpu_s(gw.pid), "emulator": tree_cpu_s(emulator.pid),
                "upstream stand-in": upstream_cpu()}
        roles0 = process_cpu_s(gw.pid)
        wall0 = time.perf_counter()
        killed: dict[str, Any] = {}
        timer = kill_collector(gw.pid, args.seconds / 2, killed) if args.kill_collector else None
        load = run_load(gw_port, "/v1/chat/completions", body, rate=args.rate, seconds=args.seconds,
                        concurrency=args.concurrency, processes=args.load_processes)
        wall = time.perf_counter() - wall0
        if timer is not None:
            timer.join()
            health = collector_health(gw.pid)
            print(f"collector pid {killed.get('pid')} killed with SIGKILL {killed.get('at', wall0) - wall0:.1f} s "
                  f"into the load; restarts since: {health.get('collector_restarts')}; the restarted collector "
                  f"received {health.get('spans_received')} spans (replayed spools and new load)")
        # Finished load processes are no longer descendants: their CPU is in our children's times.
        children = os.times()
        roles = cpu_by_role(roles0, process_cpu_s(gw.pid))
        cpu = {"gateway+collector": tree_cpu_s(gw.pid) - cpu0["gateway+collector"],
               "emulator": tree_cpu_s(emulator.pid) - cpu0["emulator"],
               "upstream stand-in": upstream_cpu() - cpu0["upstream stand-in"],
               "load generator": children.children_user + children.children_system}
        t = time.perf_counter()
        gw_exit = stop(gw)
        shutdown_s = time.perf_counter() - t
    finally:
        stop(gw, 10)
        stop(emulator, 10)
        if replay.is_alive():
            replay.terminate()
            replay.join(10)
        emu_log.close()
        gw_log.close()
    rows, request_rows, dropped = count_rows(db)
    lost = load.ok - rows
    achieved = load.sent / load.send_window_s if load.send_window_s else 0.0
    answered = load.ok / load.elapsed_s if load.elapsed_s else 0.0
    lat = np.array(load.latencies) * 1000 if load.latencies else np.zeros(1)
    print(f"{'':<22} {'target':>10} {'achieved':>10}")
    print(f"{'rate (req/s)':<22} {args.rate:10.0f} {achieved:10.0f}   (sent over the send window; 200s/s overall {answered:.0f})")
    print(f"{'duration (s)':<22} {args.seconds:10.1f} {load.elapsed_s:10.1f}   (send window {load.send_window_s:.1f})")
    print(f"latency ms p50 {np.percentile(lat, 50):.1f}  p99 {np.percentile(lat, 99):.1f}")
    print(f"statuses: {dict(load.statuses)}")
    n = max(load.sent, 1)
    print(f"CPU over the {wall:.1f} s load window (2 cores = {2 * wall:.0f} CPU-s): " + ", ".join(
        f"{name} {sec:.1f} s ({1000 * sec / n:.2f} ms/request)" for name, sec in cpu.items() if sec > 0.005)
        + f"; in all {1000 * sum(cpu.values()) / n:.2f} ms/request")
    print("  of which " + ", ".join(f"{name} {1000 * sec / n:.2f} ms/request" for name, sec in sorted(roles.items())
                                    if sec > 0.005))
    how = "clean" if gw_exit in (0, -signal.SIGTERM) else "NOT clean"
    print(f"gateway stopped by SIGTERM in {shutdown_s:.1f} s, exit {gw_exit} ({how})")
    print(f"sent {load.sent}  ok {load.ok}  image rows {rows}  request rows {request_rows}  lost {lost}  "
          f"recorded as dropped {dropped}")
    # Rows above ``ok`` (never above ``sent``) are requests the gateway finished after the client gave up.
    if load.ok <= rows <= load.sent:
        print("PASS: 0 spans lost")
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"FAIL: {lost} image spans lost; store and logs kept in {tmp}")


if __name__ == "__main__":
    main()
