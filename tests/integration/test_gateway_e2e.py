"""The official openai SDK against `aperture serve` in front of `aperture emulate`, on loopback."""

from __future__ import annotations

import json

import duckdb
import openai
import pytest

from tests.integration.gateway_harness import data_url, image_message, page_png, running_stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("e2e")) as s:
        yield s


@pytest.fixture
def client(stack):
    return openai.OpenAI(base_url=stack.gateway + "/v1", api_key="anything", max_retries=0)


@pytest.mark.parametrize("model", ["aperture/auto", "gpt-4o-mini", "claude-haiku-4-5", "gemini-2.5-flash"])
def test_base64_image_non_streaming(client, stack, model):
    raw = client.chat.completions.with_raw_response.create(model=model, messages=image_message(data_url(page_png()), detail="low" if model == "gpt-4o-mini" else None))
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage.prompt_tokens > 0
    assert raw.headers["x-aperture-request-id"].startswith("req_")
    expected_model = "gpt-4o" if model == "aperture/auto" else model
    assert raw.headers["x-aperture-route"].startswith(expected_model + ":")
    assert float(raw.headers["x-aperture-estimated-cost-usd"]) > 0
    assert raw.headers["x-aperture-ruleset"]


@pytest.mark.parametrize("model", ["aperture/auto", "claude-sonnet-4-5", "gemini-2.5-pro"])
def test_streaming_with_usage_and_several_images(client, model):
    stream = client.chat.completions.create(
        model=model, stream=True, stream_options={"include_usage": True},
        messages=image_message(data_url(page_png()), data_url(page_png(200, 120, "INV-0042", "JPEG"), "image/jpeg")),
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].prompt_tokens > 0


def test_models_and_health(client, stack):
    ids = {m.id for m in client.models.list()}
    assert {"aperture/auto", "gpt-4o", "claude-haiku-4-5", "gemini-2.5-flash"} <= ids


def test_every_image_gets_a_span_with_tokens_and_cost(client, stack):
    before = _count(stack, "image_spans")
    n = 0
    for k in range(3):
        urls = [data_url(page_png(300 + 50 * j, 200, f"LINE {k}-{j}")) for j in range(k + 1)]
        client.chat.completions.create(model="aperture/auto", messages=image_message(*urls))
        n += len(urls)
    stack.flush()
    with duckdb.connect(str(stack.db), read_only=True) as conn:
        rows = conn.execute(
            "SELECT i.tokens_estimated, i.tokens_billed, i.cost_usd, r.span_id FROM image_spans i "
            "JOIN request_spans r ON r.span_id = i.request_span_id AND r.trace_id = i.trace_id "
            "ORDER BY i.ts DESC LIMIT ?", [n]).fetchall()
    assert _count(stack, "image_spans") - before == n
    assert all(est > 0 and billed > 0 and cost > 0 for est, billed, cost, _ in rows)


def test_task_reaches_the_span_and_goes_upstream_as_a_header(client, stack):
    stack.clear_emulator()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=image_message(data_url(page_png()), detail="low"), metadata={"task": "extract"})
    request_id = raw.headers["x-aperture-request-id"]
    sent = stack.emulator_requests()
    assert len(sent) == 1
    # The emulator logs the x-aperture-task header it got, else the task it read from the prompt.
    assert sent[0]["task"] == "extract"
    stack.flush()
    with duckdb.connect(str(stack.db), read_only=True) as conn:
        stored = conn.execute("SELECT task FROM request_spans WHERE request_id = ?", [request_id]).fetchall()
    assert stored == [("extract",)]


@pytest.mark.parametrize("task", ["line\r\nx-injected: 1", "résumé", "t" * 300])
def test_an_unsafe_task_is_refused_before_anything_goes_upstream(client, stack, task):
    stack.clear_emulator()
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=image_message(data_url(page_png()), detail="low"), metadata={"task": task})
    assert (info.value.code, info.value.param) == ("invalid_request", "metadata.task")
    assert stack.emulator_requests() == []


def _count(stack, table):
    stack.flush()
    if not stack.db.exists():  # nothing exported yet by this worker's gateway
        return 0
    with duckdb.connect(str(stack.db), read_only=True) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


BAD = [
    ("invalid base64", "data:image/png;base64,@@@not-base64@@@", 400, "invalid_image"),
    ("text labelled png", "data:image/png;base64," + __import__("base64").b64encode(b"hello, I am text").decode(), 415, "unsupported_image_format"),
    ("svg", data_url(b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>', "image/svg+xml"), 415, "unsupported_image_format"),
    ("loopback url", "http://127.0.0.1:9/x.png", 403, "image_url_forbidden"),
    ("metadata url", "http://169.254.169.254/latest/meta-data", 403, "image_url_forbidden"),
    ("private url", "http://10.0.0.1/a.png", 403, "image_url_forbidden"),
    ("v6 loopback", "http://[::1]/a.png", 403, "image_url_forbidden"),
]


@pytest.mark.parametrize(("name", "url", "status", "code"), BAD, ids=[b[0] for b in BAD])
def test_bad_images_refused_without_upstream_call(client, stack, name, url, status, code):
    stack.clear_emulator()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="aperture/auto", messages=image_message(url))
    assert info.value.status_code == status
    assert info.value.body["code"] == code, json.dumps(info.value.body)
    assert stack.emulator_requests() == []


def test_unknown_model_and_bad_body(client, stack):
    stack.clear_emulator()
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o", messages=[])
    assert stack.emulator_requests() == []
