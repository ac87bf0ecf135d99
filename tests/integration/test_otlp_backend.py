"""The router's OTLP export, received by a real OTLP backend (Arize Phoenix) and read back through its API.

Phoenix is not a project dependency (it pins many packages of its own), so it lives in its
own virtualenv, created once and cached under ``$APERTURE_CACHE_DIR/phoenix-venv``
(default ``~/.cache/aperture/phoenix-venv``). The install is the only step that needs
PyPI; when it cannot be done the test skips and says why. Once Phoenix runs, a missing or
altered span is a failure, never a skip. Phoenix itself runs offline on loopback ports,
with its telemetry pixels and external resources switched off.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx
import openai
import pytest

from aperture.servers import listen_port
from tests.integration.gateway_harness import data_url, image_message, page_png, running_stack

pytestmark = pytest.mark.slow

CACHE_DIR = Path(os.environ.get("APERTURE_CACHE_DIR") or Path.home() / ".cache" / "aperture")
PHOENIX_VENV = CACHE_DIR / "phoenix-venv"
INSTALL_TIMEOUT_S = 1800
START_TIMEOUT_S = 240
PROJECT = "aperture-otlp-test"
IMAGE_ATTRS = ("image.sha256", "image.width", "image.height", "image.bytes", "image.format",
               "image.detail", "image.tokens_estimated", "image.tokens_billed", "image.cost_usd")


def _tail(text: str | bytes | None, lines: int = 15) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").strip().splitlines()[-lines:])


def phoenix_python() -> Path:
    """The Python of the cached Phoenix virtualenv, installing it on first use.

    The venv is built beside its final place and renamed when pip has finished, so an
    interrupted install never leaves a half-built cache behind. Phoenix is started with
    ``python -m`` because console-script shebangs would still name the temporary path.
    """
    python = PHOENIX_VENV / "bin" / "python"
    if (PHOENIX_VENV / "pyvenv.cfg").exists():
        return python
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = CACHE_DIR / f"phoenix-venv.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(partial)], check=True, capture_output=True, timeout=300)
        subprocess.run(
            [str(partial / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--timeout", "60", "arize-phoenix"],
            check=True, capture_output=True, timeout=INSTALL_TIMEOUT_S,
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        pytest.skip(f"arize-phoenix could not be installed from PyPI (pip exit {exc.returncode}):\n{_tail(exc.stderr)}")
    except subprocess.TimeoutExpired:
        shutil.rmtree(partial, ignore_errors=True)
        pytest.skip(f"arize-phoenix install did not finish within {INSTALL_TIMEOUT_S} s")
    try:
        partial.rename(PHOENIX_VENV)
    except OSError:  # another run finished first; keep its venv
        shutil.rmtree(partial, ignore_errors=True)
    return python


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``phoenix serve`` on free loopback ports with a throwaway working dir; yields its base URL."""
    python = phoenix_python()
    workdir = tmp_path_factory.mktemp("phoenix")
    http_port, grpc_port = listen_port("127.0.0.1"), listen_port("127.0.0.1")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_"))}
    env.update({
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(http_port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_WORKING_DIR": str(workdir),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
        "PHOENIX_ENABLE_MCP_SERVER": "false",
        "PHOENIX_DISABLE_AGENT_ASSISTANT": "true",
    })
    log_path = workdir / "phoenix.log"
    url = f"http://127.0.0.1:{http_port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([str(python), "-m", "phoenix.server.main", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"phoenix exited with {proc.returncode} before it was ready:\n{_tail(log_path.read_text(errors='replace'), 30)}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"phoenix did not answer /healthz within {START_TIMEOUT_S} s:\n{_tail(log_path.read_text(errors='replace'), 30)}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def phoenix_spans(url: str, project: str) -> list[dict[str, Any]]:
    """Every span of a project through Phoenix's REST API (``GET /v1/projects/{p}/spans``), all pages."""
    spans: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000, **({"cursor": cursor} if cursor else {})}
        r = httpx.get(f"{url}/v1/projects/{project}/spans", params=params, timeout=30)
        if r.status_code == 404:  # the project appears with its first span
            return []
        r.raise_for_status()
        body = r.json()
        spans.extend(body["data"])
        cursor = body.get("next_cursor")
        if not cursor:
            return spans


def wait_for_spans(url: str, project: str, *, images: int, requests: int, timeout_s: float = 90.0) -> list[dict[str, Any]]:
    """Phoenix inserts received spans in the background: poll until all arrived or time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        spans = phoenix_spans(url, project)
        n_images = sum(s["name"] == "image" for s in spans)
        n_chat = sum(s["name"].startswith("chat ") for s in spans)
        if (n_images >= images and n_chat >= requests) or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


@pytest.mark.timeout(INSTALL_TIMEOUT_S + 600)
def test_router_spans_read_back_from_phoenix_with_image_attributes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, phoenix: str
) -> None:
    # Standard OTel variables, read when the app builds its exporters.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"{phoenix}/v1/traces")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"openinference.project.name={PROJECT}")
    first = page_png(320, 200, "INVOICE 42")
    second = page_png(900, 600, "TOTAL $12.50")
    third = page_png(200, 120, "hello", fmt="JPEG")
    sent = {hashlib.sha256(b).hexdigest(): b for b in (first, second, third)}

    with running_stack(tmp_path) as stack:
        client = openai.OpenAI(base_url=stack.gateway + "/v1", api_key="anything", max_retries=0)
        client.chat.completions.create(model="gpt-4o", max_tokens=32,
                                       messages=image_message(data_url(first), data_url(second), detail="high"))
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=32,
                                       messages=image_message(data_url(third, "image/jpeg"), detail="low"))
        stack.flush()
        with duckdb.connect(str(stack.db), read_only=True) as conn:
            cols = ["span_id", "request_span_id", "trace_id", "sha256", "width", "height", "bytes", "format",
                    "detail", "tokens_estimated", "tokens_billed", "cost_usd"]
            stored = {row[0]: dict(zip(cols, row, strict=True))
                      for row in conn.execute(f"SELECT {', '.join(cols)} FROM image_spans").fetchall()}
    assert len(stored) == 3

    spans = wait_for_spans(phoenix, PROJECT, images=3, requests=2)
    images = [s for s in spans if s["name"] == "image"]
    by_id = {s["context"]["span_id"]: s for s in spans}
    assert len(images) == 3, f"phoenix has {len(images)} image spans of 3: {[s['name'] for s in spans]}"
    assert {s["attributes"].get("image.sha256") for s in images} == set(sent)

    for span in images:
        attrs = span["attributes"]
        missing = [k for k in IMAGE_ATTRS if k not in attrs]
        assert not missing, f"image span lost {missing}: {attrs}"
        row = stored[span["context"]["span_id"]]  # the same span the embedded store holds
        assert span["context"]["trace_id"] == row["trace_id"]
        for key in ("sha256", "width", "height", "bytes", "format", "detail", "tokens_estimated", "tokens_billed"):
            assert attrs[f"image.{key}"] == row[key], key
        assert math.isclose(attrs["image.cost_usd"], row["cost_usd"], rel_tol=1e-9)
        assert attrs["image.tokens_estimated"] > 0 and attrs["image.tokens_billed"] > 0 and attrs["image.cost_usd"] > 0
        assert attrs["image.bytes"] == len(sent[attrs["image.sha256"]])

        parent = by_id[span["parent_id"]]
        assert parent["context"]["span_id"] == row["request_span_id"]
        p = parent["attributes"]
        assert parent["name"] == f"chat {p['gen_ai.request.model']}"
        assert p["gen_ai.operation.name"] == "chat"
        assert p["gen_ai.provider.name"] == "openai"
        assert p["gen_ai.request.model"] == attrs["gen_ai.request.model"]
        assert p["gen_ai.response.model"]
        assert p["gen_ai.usage.input_tokens"] == p["llm.token_count.prompt"] > 0
        assert p["gen_ai.usage.output_tokens"] == p["llm.token_count.completion"]
        assert p["llm.model_name"] == p["gen_ai.request.model"]
        assert p["llm.cost.total"] > 0
        assert p["llm.provider"] == "openai"  # openinference.span.kind becomes span_kind below
        assert parent["span_kind"] == "LLM"  # Phoenix classifies it as an LLM call

    assert {by_id[s["parent_id"]]["attributes"]["gen_ai.request.model"] for s in images} == {"gpt-4o", "gpt-4o-mini"}
    attempts = [s for s in spans if s["name"].startswith("upstream ")]
    assert attempts and all(by_id[s["parent_id"]]["name"].startswith("chat ") for s in attempts)
    assert {s["attributes"]["gen_ai.provider.name"] for s in attempts} == {"openai"}
    detail = {s["attributes"]["image.sha256"]: s["attributes"]["image.detail"] for s in images}
    assert detail[hashlib.sha256(third).hexdigest()] == "low"
    assert detail[hashlib.sha256(first).hexdigest()] == "high"
