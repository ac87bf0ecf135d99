"""A running emulator + gateway pair on loopback for integration tests (shared, not a test module)."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from PIL import Image, ImageDraw

from aperture.servers import running_app
from aperture.wiring import build_gateway_app
from emulator.testing import running_emulator
from router.config import parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "emulated.yaml"


@dataclass
class Stack:
    gateway: str
    emulator: str
    db: Path
    app: Any

    def emulator_requests(self) -> list[dict[str, Any]]:
        data = httpx.get(f"{self.emulator}/_emulator/requests", timeout=10).json()
        return data["requests"] if isinstance(data, dict) else data

    def clear_emulator(self) -> None:
        httpx.delete(f"{self.emulator}/_emulator/requests", timeout=10)
        httpx.delete(f"{self.emulator}/_emulator/faults", timeout=10)

    def fault(self, **spec: Any) -> None:
        r = httpx.post(f"{self.emulator}/_emulator/faults", json=spec, timeout=10)
        r.raise_for_status()

    def flush(self) -> None:
        self.app.state.telemetry.flush()


def config_text(emulator_url: str, overrides: dict[str, Any] | None = None) -> str:
    data = yaml.safe_load(EXAMPLE.read_text().replace("${APERTURE_EMULATOR_URL:-http://127.0.0.1:9100}", emulator_url))
    for key, value in (overrides or {}).items():
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return yaml.safe_dump(data)


@contextmanager
def running_stack(tmp: Path, *, mode: str = "instant", overrides: dict[str, Any] | None = None,
                  rules_store: Path | None = None, upstream_transport: Any = None, **emulator_kw: Any) -> Iterator[Stack]:
    with running_emulator(mode=mode, catalog=str(EXAMPLE), **emulator_kw) as emulator_url:
        cfg = parse_config(config_text(emulator_url, overrides), base_dir=EXAMPLE.parent)
        db = tmp / "store.duckdb"
        app = build_gateway_app(cfg, db_path=db, rules_store=rules_store, upstream_transport=upstream_transport)
        with running_app(app, name="gateway") as gateway_url:
            yield Stack(gateway_url, emulator_url, db, app)


def page_png(width: int = 320, height: int = 200, text: str = "TOTAL $12.50", fmt: str = "PNG") -> bytes:
    img = Image.new("RGB", (width, height), "white")
    ImageDraw.Draw(img).text((10, 10), text, fill="black")
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_message(*urls: str, text: str = "Transcribe all the text in this image.", detail: str | None = None) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    for url in urls:
        image_url: dict[str, Any] = {"url": url}
        if detail:
            image_url["detail"] = detail
        parts.append({"type": "image_url", "image_url": image_url})
    return [{"role": "user", "content": parts}]


os.environ.setdefault("OPENAI_API_KEY", "sk-test-not-used")
