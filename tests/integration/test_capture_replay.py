"""Content captured in the conventions' parts format goes through the store and comes back as a
replayable OpenAI request (the optimizer's replay) and as the prompt evals read."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import openai

from collector.store import fetch_df, open_store
from evals.cases import prompt_text
from optimizer.replay import load_items
from tests.integration.gateway_harness import data_url, image_message, page_png, running_stack


def test_a_captured_request_replays_with_its_image_and_text(tmp_path: Path) -> None:
    blobs = tmp_path / "blobs"
    png = page_png(240, 120, "INVOICE 42")
    overrides = {"telemetry.capture_content": True, "telemetry.blob_dir": str(blobs)}
    with running_stack(tmp_path, overrides=overrides) as stack:
        with openai.OpenAI(base_url=f"{stack.gateway}/v1", api_key="k", max_retries=0) as client:
            client.chat.completions.create(model="gpt-4o-mini", max_tokens=32, extra_headers={"x-aperture-task": "transcribe"},
                                           messages=image_message(data_url(png), text="Read the invoice.", detail="low"))
        stack.flush()
    with open_store(stack.db, read_only=True) as conn:
        (captured,) = fetch_df(conn, "SELECT input_text FROM request_spans")["input_text"].to_list()
    assert json.loads(captured)[0]["parts"][0] == {"type": "text", "content": "Read the invoice."}
    assert prompt_text(captured) == "Read the invoice."
    (item,) = load_items(stack.db, blobs, 1)
    (message,) = item.messages
    text, image = message["content"]
    assert text == {"type": "text", "text": "Read the invoice."}
    url = image["image_url"]["url"]
    assert base64.b64decode(url.split(",", 1)[1]) == png and item.sha256 == hashlib.sha256(png).hexdigest()
