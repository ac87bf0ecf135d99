"""The response cache in one gateway (memory store): hits, modes, teams, errors, spans and spend."""

from __future__ import annotations

import duckdb
import openai
import pytest
from typer.testing import CliRunner

from aperture.cli import app as cli
from tests.integration.gateway_harness import data_url, image_message, page_png, running_stack

pytestmark = pytest.mark.slow

OVERRIDES = {
    "virtual_keys": {"sk-a": {"team": "a"}, "sk-a2": {"team": "a"}, "sk-b": {"team": "b"}, "sk-c": {"team": "c"}},
    "teams": {"a": {}, "b": {}, "c": {}},
    "cache": {"enabled": True, "teams": ["a", "b"], "backend": "memory"},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("cache"), overrides=OVERRIDES) as s:
        yield s


def client(stack, key):
    return openai.OpenAI(base_url=stack.gateway + "/v1", api_key=key, max_retries=0)


def ask(stack, key, text, **kw):
    messages = image_message(data_url(page_png(64, 48, text=text)))
    return client(stack, key).chat.completions.with_raw_response.create(model="gpt-4o", messages=messages, max_tokens=16, **kw)


def test_hit_is_free_recorded_and_in_spend(stack, tmp_path):
    stack.clear_emulator()
    miss = ask(stack, "sk-a", "spend")
    hit = ask(stack, "sk-a2", "spend")  # another key of the same team shares the entry
    assert (miss.headers["x-aperture-cache"], hit.headers["x-aperture-cache"]) == ("miss", "hit")
    assert hit.parse().choices[0].message.content == miss.parse().choices[0].message.content
    assert len(stack.emulator_requests()) == 1
    stack.flush()
    with duckdb.connect(str(stack.db), read_only=True) as conn:
        rows = conn.execute(
            "SELECT request_id, cache_hit, cache_saved_usd, billed_cost_usd FROM request_spans WHERE request_id IN (?, ?)",
            [miss.headers["x-aperture-request-id"], hit.headers["x-aperture-request-id"]],
        ).fetchall()
    by_id = {r[0]: r[1:] for r in rows}
    paid = by_id[miss.headers["x-aperture-request-id"]]
    saved = by_id[hit.headers["x-aperture-request-id"]]
    assert paid[0] is False and paid[2] > 0
    assert saved == (True, pytest.approx(paid[2]), 0.0)
    result = CliRunner().invoke(cli, ["spend", "--db", str(stack.db), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert '"cache_hits": 1' in result.output


def test_modes_bypass_refresh_and_bad_header(stack):
    ask(stack, "sk-a", "modes")
    stack.clear_emulator()
    bypass = ask(stack, "sk-a", "modes", extra_headers={"x-aperture-cache": "bypass"})
    assert "x-aperture-cache" not in bypass.headers and len(stack.emulator_requests()) == 1
    refresh = ask(stack, "sk-a", "modes", extra_headers={"x-aperture-cache": "refresh"})
    assert refresh.headers["x-aperture-cache"] == "miss" and len(stack.emulator_requests()) == 2
    assert ask(stack, "sk-a", "modes").headers["x-aperture-cache"] == "hit"
    with pytest.raises(openai.BadRequestError) as info:
        ask(stack, "sk-a", "modes", extra_headers={"x-aperture-cache": "sometimes"})
    assert info.value.body["code"] == "invalid_header"
    assert len(stack.emulator_requests()) == 2


def test_teams_do_not_share_and_an_unlisted_team_has_no_cache(stack):
    ask(stack, "sk-a", "teams")
    stack.clear_emulator()
    assert ask(stack, "sk-b", "teams").headers["x-aperture-cache"] == "miss"
    assert "x-aperture-cache" not in ask(stack, "sk-c", "teams").headers
    assert "x-aperture-cache" not in ask(stack, "sk-c", "teams").headers
    assert len(stack.emulator_requests()) == 3


def test_errors_are_never_cached(stack):
    stack.clear_emulator()
    stack.fault(match={"provider": "openai"}, fault="500", times=3)  # one try and two retries
    with pytest.raises(openai.APIStatusError) as info:
        ask(stack, "sk-a", "errors")
    assert info.value.status_code == 502
    answer = ask(stack, "sk-a", "errors")
    assert answer.headers["x-aperture-cache"] == "miss" and answer.parse().choices[0].message.content
    assert [r["status"] for r in stack.emulator_requests()] == [500, 500, 500, 200]


def test_a_streamed_answer_is_stored_and_served_to_both_kinds(stack):
    stack.clear_emulator()
    messages = image_message(data_url(page_png(64, 48, text="streamed")))
    openai_client = client(stack, "sk-a")
    with openai_client.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=messages, max_tokens=16, stream=True,
    ) as first:
        assert first.headers["x-aperture-cache"] == "miss"
        text = "".join(c.choices[0].delta.content or "" for c in first.parse() if c.choices)
    hit = openai_client.chat.completions.with_raw_response.create(model="gpt-4o", messages=messages, max_tokens=16)
    assert hit.headers["x-aperture-cache"] == "hit" and hit.parse().choices[0].message.content == text
    stream = openai_client.chat.completions.create(
        model="gpt-4o", messages=messages, max_tokens=16, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len(stack.emulator_requests()) == 1
