"""Vision mode: the answer comes from real OCR of the image at the size the provider's model
would see, so detail changes what is read. Runs the OCR model (cached on disk in tmp_path)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import httpx
import openai
import pytest
from PIL import Image, ImageDraw, ImageFont

from emulator.testing import running_emulator

pytestmark = pytest.mark.slow


def document(size: tuple[int, int], font_px: int, lines: list[str]) -> bytes:
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=font_px)
    for i, line in enumerate(lines):
        draw.text((20, 20 + int(i * font_px * 1.6)), line, fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def ask(client: openai.OpenAI, data: bytes, detail: str) -> str:
    url = "data:image/png;base64," + base64.b64encode(data).decode()
    out = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
        {"type": "text", "text": "Transcribe all the text."},
        {"type": "image_url", "image_url": {"url": url, "detail": detail}}]}])
    return out.choices[0].message.content or ""


def test_detail_changes_what_ocr_reads(tmp_path: Path) -> None:
    lines = [f"Item {i:02d} widget order {48213 + i} amount {i * 17}.50 USD" for i in range(30)]
    dense = document((1600, 1000), 14, lines)
    with running_emulator(mode="vision", cache_dir=tmp_path) as base, \
            openai.OpenAI(base_url=f"{base}/v1", api_key="k", max_retries=0) as client:
        high = ask(client, dense, "high")
        low = ask(client, dense, "low")
        again = ask(client, dense, "high")
        entries = httpx.get(f"{base}/_emulator/requests").json()["requests"]
    read_high = sum(line in high for line in lines)
    read_low = sum(line in low for line in lines)
    assert read_high >= 25  # 14 px text read at 1228x768
    assert read_low < read_high / 2  # the same text shrunk to ~6 px at 512x320
    assert again == high
    assert [e["effective_sizes"] for e in entries] == [[[1228, 768]], [[512, 320]], [[1228, 768]]]
    assert any(tmp_path.rglob("*.json"))  # OCR results are cached on disk
