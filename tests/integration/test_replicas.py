"""Two `aperture serve` processes sharing one real Redis act as one gateway (examples/replicas.yaml).

Rate limits, team budgets and breakers are shared; the response cache spans replicas (base64 on
one, a URL of the same bytes on the other: a hit with no upstream call, streamed or not); a Redis
killed mid-run leaves the replicas serving on their own limits (``on_failure: open``), with no
500s and no request past its deadline, and they use Redis again once it is back.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from aperture.servers import listen_port, wait_answering
from emulator.testing import running_emulator
from router.state.redis import RedisState
from tests.integration.gateway_harness import EXAMPLE, page_png
from tests.redis_fixture import RedisServer, redis_server  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow
REPLICAS = EXAMPLE.parent / "replicas.yaml"
POOR_CAP_USD = 0.006
NO_CACHE = {"x-aperture-cache": "bypass"}  # every request paid, so budgets and breakers see it


def _config(tmp: Path) -> Path:
    """examples/replicas.yaml plus test keys, a fast breaker, and loopback image URLs allowed."""
    data = yaml.safe_load(REPLICAS.read_text())
    data["virtual_keys"].update({"sk-b": {"team": "b"}, "sk-poor": {"team": "poor"}})
    data["teams"].update({"b": {}, "poor": {"daily_budget_usd": POOR_CAP_USD}})
    data["providers"]["anthropic"].update(cooldown_failures=2, cooldown_s=30.0, max_retries=0)
    data.setdefault("ssrf", {})["allow_networks"] = ["127.0.0.0/8"]  # the test's image server only
    data["state"]["timeout_s"] = 2.0  # one slow call on a loaded machine must not switch a replica to its own limits
    data.setdefault("routing", {})["rules_file"] = str(EXAMPLE.parent / "rules" / "baseline.yaml")
    path = tmp / "replicas.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class Replicas:
    urls: list[str]
    emulator: str
    redis: RedisServer

    def client(self, index: int, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.urls[index % len(self.urls)] + "/v1", api_key=key, max_retries=0, timeout=30)

    def upstream_calls(self) -> int:
        return len(httpx.get(f"{self.emulator}/_emulator/requests", timeout=10).json()["requests"])

    def fault(self, **spec: Any) -> None:
        httpx.post(f"{self.emulator}/_emulator/faults", json=spec, timeout=10).raise_for_status()

    def clear_faults(self) -> None:
        httpx.delete(f"{self.emulator}/_emulator/faults", timeout=10)


@contextmanager
def serving(config: Path, tmp: Path, env: dict[str, str], count: int) -> Iterator[list[str]]:
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for n in range(count):
            port = listen_port("127.0.0.1")
            log = (tmp / f"serve{n}.log").open("wb")
            procs.append(subprocess.Popen(
                [sys.executable, "-c", "from aperture.cli import app; app()", "serve", "--config", str(config),
                 "--port", str(port), "--db", str(tmp / f"store{n}.duckdb")],
                env=env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT,
            ))
            urls.append(f"http://127.0.0.1:{port}")
        for url, proc in zip(urls, procs, strict=True):
            wait_answering(url + "/healthz", proc.poll, 90, what="aperture serve")
        yield urls
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def replicas(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("replicas")
    with running_emulator(mode="instant", catalog=str(EXAMPLE)) as emulator_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP")}
        env.update(APERTURE_IMAGES__TEXT_FEATURES="false", APERTURE_REDIS_URL=redis_server.url,
                   APERTURE_EMULATOR_URL=emulator_url)
        with serving(_config(tmp), tmp, env, count=2) as urls:
            yield Replicas(urls, emulator_url, redis_server)


def _message(url: str, text: str = "Read the total.") -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]}]


def _png_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@contextmanager
def image_server(data: bytes) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/page.png"
    finally:
        server.shutdown()
        server.server_close()


def test_rpm_is_shared_across_replicas(replicas: Replicas) -> None:
    """100 requests for a key with rpm 60, alternating replicas: at most 60 (+1, +refill) pass."""
    msg = _message(_png_url(page_png(32, 24, text="r")))
    clients = [replicas.client(i, "sk-demo-a") for i in range(2)]
    ok = limited = 0
    started = time.monotonic()
    for n in range(100):
        try:
            clients[n % 2].chat.completions.create(model="gpt-4o-mini", messages=msg, max_tokens=8)
            ok += 1
        except openai.RateLimitError as exc:
            assert exc.response.headers.get("retry-after")
            limited += 1
    elapsed = time.monotonic() - started
    # Unshared, each replica would pass its 50. Shared: the minute's 60, plus what refilled meanwhile.
    assert 60 <= ok <= 61 + int(elapsed) + 1, (ok, elapsed)
    assert limited == 100 - ok


def test_team_budget_stops_both_replicas_at_the_cap(replicas: Replicas) -> None:
    msg = _message(_png_url(page_png(32, 24, text="b")))
    outcomes: list[int] = []
    estimate = 0.0
    for n in range(40):
        raw = replicas.client(n, "sk-poor").chat.completions.with_raw_response
        try:
            response = raw.create(model="gpt-4o", messages=msg, max_tokens=32, extra_headers=NO_CACHE)
            estimate = max(estimate, float(response.headers["x-aperture-estimated-cost-usd"]))
            outcomes.append(200)
        except openai.APIStatusError as exc:
            assert exc.status_code == 402 and exc.body["code"] == "budget_exceeded"  # type: ignore[index]
            outcomes.append(402)
            if outcomes[-2:] == [402, 402]:
                break  # refused by both replicas in turn
    assert outcomes[-2:] == [402, 402] and outcomes.count(200) >= 2
    spent = asyncio.run(_spent(replicas.redis.url, "poor"))
    assert POOR_CAP_USD - estimate < spent <= POOR_CAP_USD + 1e-9, (spent, estimate)


async def _spent(url: str, team: str) -> float:
    state = RedisState(url, team_budgets={team: POOR_CAP_USD}, prefix="aperture:")
    try:
        return await state.budgets.spent_today(team)
    finally:
        await state.close()


def test_a_breaker_opened_by_one_replica_is_open_for_the_other(replicas: Replicas) -> None:
    msg = _message(_png_url(page_png(32, 24, text="k")))
    replicas.fault(match={"provider": "anthropic"}, fault="500", times=None)
    try:
        for _ in range(2):
            with pytest.raises(openai.APIStatusError):
                replicas.client(0, "sk-b").chat.completions.create(
                    model="claude-haiku-4-5", messages=msg, extra_headers=NO_CACHE)
        before = replicas.upstream_calls()
        with pytest.raises(openai.APIStatusError) as info:
            replicas.client(1, "sk-b").chat.completions.create(
                model="claude-haiku-4-5", messages=msg, extra_headers=NO_CACHE)
        assert info.value.status_code == 503
        assert replicas.upstream_calls() == before  # refused by the open breaker: nothing sent
    finally:
        replicas.clear_faults()


def test_the_cache_spans_replicas_base64_and_url_streamed_or_not(replicas: Replicas) -> None:
    png = page_png(48, 32, text="cache me")
    with image_server(png) as url:
        first = replicas.client(0, "sk-b").chat.completions.with_raw_response.create(
            model="gpt-4o", messages=_message(_png_url(png)), max_tokens=32)
        assert first.headers["x-aperture-cache"] == "miss"
        answer = first.parse().choices[0].message.content
        calls = replicas.upstream_calls()
        second = replicas.client(1, "sk-b").chat.completions.with_raw_response.create(
            model="gpt-4o", messages=_message(url), max_tokens=32)
        assert second.headers["x-aperture-cache"] == "hit"
        assert second.parse().choices[0].message.content == answer
        with replicas.client(1, "sk-b").chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=_message(url), max_tokens=32, stream=True,
        ) as streamed:
            assert streamed.headers["x-aperture-cache"] == "hit"
            text = "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)
        assert text == answer
        assert replicas.upstream_calls() == calls  # neither hit went upstream
        bypass = replicas.client(0, "sk-b").chat.completions.with_raw_response.create(
            model="gpt-4o", messages=_message(url), max_tokens=32, extra_headers={"x-aperture-cache": "bypass"})
        assert "x-aperture-cache" not in bypass.headers and replicas.upstream_calls() == calls + 1
        other_team = replicas.client(0, "sk-poor").chat.completions.with_raw_response
        try:  # the poor team's budget may be spent by now: either way it never sees team b's entry
            assert other_team.create(model="gpt-4o", messages=_message(url), max_tokens=32).headers["x-aperture-cache"] == "miss"
        except openai.APIStatusError as exc:
            assert exc.status_code == 402


def test_redis_killed_mid_run_fails_open_and_recovers(replicas: Replicas) -> None:
    msg = _message(_png_url(page_png(32, 24, text="down")))
    replicas.redis.kill()
    try:
        for n in range(4):
            started = time.monotonic()
            answer = replicas.client(n, "sk-b").chat.completions.create(model="gpt-4o-mini", messages=msg, max_tokens=8)
            assert answer.choices[0].message.content is not None
            assert time.monotonic() - started < 5.0
        metrics = httpx.get(replicas.urls[0] + "/metrics", timeout=10).text
        assert "aperture_state_fallbacks_total" in metrics
    finally:
        replicas.redis.start()  # same port, empty (a Redis that lost its data)
    time.sleep(1.2)  # state.retry_interval_s
    for n in range(2):
        replicas.client(n, "sk-b").chat.completions.create(model="gpt-4o-mini", messages=msg, max_tokens=8)
    assert asyncio.run(_key_count(replicas.redis.url)) > 0  # the replicas write to Redis again


async def _key_count(url: str) -> int:
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        return int(await client.dbsize())
    finally:
        await client.aclose()
