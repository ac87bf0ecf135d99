"""`aperture serve --workers 2`: two gateway processes and their collector, run as a user would.

The gateway is a real subprocess (uvicorn's multi-process mode cannot run in a thread); the
emulator runs in this process. After SIGTERM every image answered must be a row in the
collector's DuckDB file.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import pytest
from openai import OpenAI
from typer.testing import CliRunner

from aperture.cli import app
from aperture.servers import collector_forward_url, listen_port, wait_answering
from emulator.testing import running_emulator
from tests.integration.gateway_harness import EXAMPLE, config_text, page_png

pytestmark = pytest.mark.slow


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").iterdir():
            children = [int(c) for c in (task / "children").read_text().split()]
            found += children
            todo += children
    return found


def _fast_paths(pid: int) -> set[str]:
    """Which of uvicorn's compiled fast paths a process has loaded (Linux: its memory map)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name in ("uvloop", "httptools") if f"/{name}/" in maps}


def test_serve_workers_every_image_reaches_the_collector_store(tmp_path: Path) -> None:
    png = "data:image/png;base64," + base64.b64encode(page_png(64, 48)).decode()
    with running_emulator(mode="instant", catalog=str(EXAMPLE)) as emulator_url:
        config = tmp_path / "gateway.yaml"
        config.write_text(config_text(emulator_url, {"routing.rules_file": str(EXAMPLE.parent / "rules" / "baseline.yaml")}))
        db, port = tmp_path / "store.duckdb", listen_port("127.0.0.1")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP")}
        env["APERTURE_IMAGES__TEXT_FEATURES"] = "false"
        log = (tmp_path / "serve.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-c", "from aperture.cli import app; app()", "serve", "--config", str(config),
             "--port", str(port), "--db", str(db), "--workers", "2"],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            wait_answering(f"http://127.0.0.1:{port}/healthz", proc.poll, 90, what="aperture serve")
            client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="any", max_retries=0)
            images = 0
            for n_images in (1, 2, 1, 3, 1, 1):
                content = [{"type": "text", "text": "read it"}]
                content += [{"type": "image_url", "image_url": {"url": png, "detail": "low"}}] * n_images
                answer = client.chat.completions.create(model="gpt-4o-mini", max_tokens=8,
                                                        messages=[{"role": "user", "content": content}])
                assert answer.choices[0].message.content is not None
                images += n_images
            # Workers and collector serve with uvloop + httptools (a spawn helper may be among the children).
            loaded = [_fast_paths(pid) for pid in _descendants(proc.pid)]
            installed = {name for name in ("uvloop", "httptools") if importlib.util.find_spec(name)}
            assert sum(paths == installed for paths in loaded) >= 3, loaded
        finally:
            proc.send_signal(signal.SIGTERM)
            exit_code = proc.wait(timeout=120)
            log.close()
    output = (tmp_path / "serve.log").read_text()
    assert exit_code == 0, output
    # No access line per request (workers) or per OTLP batch (collector); errors would still show.
    assert "POST /v1/chat/completions" not in output and "POST /v1/traces" not in output, output[-2000:]
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute("SELECT count(*), count(DISTINCT request_span_id) FROM image_spans").fetchone()
    assert rows == (images, 6)


def test_serve_workers_refuses_collector_without_workers(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", "--config", str(EXAMPLE), "--collector", "http://127.0.0.1:1/v1/traces"])
    assert result.exit_code == 2
    assert "--collector is for --workers > 1" in result.output


def test_serve_workers_refuses_zero_workers() -> None:
    result = CliRunner().invoke(app, ["serve", "--config", str(EXAMPLE), "--workers", "0"])
    assert result.exit_code == 2


def test_serve_workers_child_collector_forwards_where_otlp_pointed() -> None:
    assert collector_forward_url({}) is None
    assert collector_forward_url({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318/"}) == "http://tempo:4318/v1/traces"
    assert collector_forward_url({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
                                  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b/v1/traces"}) == "http://b/v1/traces"


def test_serve_workers_stop_when_a_worker_cannot_start(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text("http://127.0.0.1:9", {"routing.rules_file": str(tmp_path / "missing.yaml")}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP")}
    result = subprocess.run(
        [sys.executable, "-c", "from aperture.cli import app; app()", "serve", "--config", str(config),
         "--port", str(listen_port("127.0.0.1")), "--db", str(tmp_path / "store.duckdb"), "--workers", "2"],
        env=env, cwd=tmp_path, capture_output=True, timeout=120,
    )
    assert result.returncode == 3, result.stderr.decode()[-2000:]
    assert b"gateway worker could not start" in result.stderr


def _collector_pid(serve_pid: int) -> int:
    pid = _find_collector(serve_pid)
    if pid is None:
        raise AssertionError("no collector process under serve")
    return pid


def _find_collector(serve_pid: int) -> int | None:
    """The collector is the one child of ``serve`` that leads its own process group (None while
    there is none: between a kill and the restart after its backoff)."""
    for pid in _descendants(serve_pid):
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if int(stat[2]) == pid and b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    return None


def test_serve_workers_kill_9_of_the_collector_loses_no_span(tmp_path: Path) -> None:
    png = "data:image/png;base64," + base64.b64encode(page_png(32, 24)).decode()
    with running_emulator(mode="instant", catalog=str(EXAMPLE)) as emulator_url:
        config = tmp_path / "gateway.yaml"
        config.write_text(config_text(emulator_url, {"routing.rules_file": str(EXAMPLE.parent / "rules" / "baseline.yaml")}))
        db, port = tmp_path / "store.duckdb", listen_port("127.0.0.1")
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_EXPORTER_OTLP")}
        env["APERTURE_IMAGES__TEXT_FEATURES"] = "false"
        log = (tmp_path / "serve.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-c", "from aperture.cli import app; app()", "serve", "--config", str(config),
             "--port", str(port), "--db", str(db), "--workers", "2"],
            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        )
        body = {"model": "gpt-4o-mini", "max_tokens": 8, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "read it"}, {"type": "image_url", "image_url": {"url": png, "detail": "low"}}]}]}
        answered = 0
        try:
            wait_answering(f"http://127.0.0.1:{port}/healthz", proc.poll, 90, what="aperture serve")
            first = _collector_pid(proc.pid)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                for i in range(150):
                    if i == 50:
                        os.kill(first, signal.SIGKILL)
                    answered += client.post("/v1/chat/completions", json=body).status_code == 200
                    time.sleep(0.01)
            deadline = time.monotonic() + 60
            while (second := _find_collector(proc.pid)) in (None, first):  # restarted after its backoff
                assert time.monotonic() < deadline, "the collector was not restarted"
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            exit_code = proc.wait(timeout=120)
            log.close()
    output = (tmp_path / "serve.log").read_text()
    assert exit_code == 0, output[-3000:]
    assert second != first and "the collector (pid" in output and "restarting it" in output
    assert answered == 150
    with duckdb.connect(str(db), read_only=True) as conn:
        images, requests = conn.execute("SELECT count(*), count(DISTINCT request_span_id) FROM image_spans").fetchone()  # type: ignore[misc]
        lost = conn.execute("SELECT coalesce(sum(count), 0) FROM dropped_spans").fetchone()
    assert (images, requests) == (150, 150)
    assert lost == (0,)
