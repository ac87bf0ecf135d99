"""Keys, rate limits and budgets, enforced before any upstream call, settled to billed cost."""

from __future__ import annotations

import duckdb
import openai
import pytest

from tests.integration.gateway_harness import data_url, image_message, page_png, running_stack

pytestmark = pytest.mark.slow

OVERRIDES = {
    "virtual_keys": {
        "sk-team-a": {"team": "a"},
        "sk-limited": {"team": "b", "rpm": 2},
        "sk-poor": {"team": "poor"},
    },
    "teams": {"a": {"daily_budget_usd": 1.0}, "poor": {"daily_budget_usd": 0.004}},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("budgets"), overrides=OVERRIDES) as s:
        yield s


def client(stack, key):
    return openai.OpenAI(base_url=stack.gateway + "/v1", api_key=key, max_retries=0)


def msg():
    return image_message(data_url(page_png(1200, 900)))


def test_unknown_key_refused(stack):
    stack.clear_emulator()
    with pytest.raises(openai.AuthenticationError) as info:
        client(stack, "sk-wrong").chat.completions.create(model="gpt-4o", messages=msg())
    assert info.value.body["code"] == "invalid_api_key"
    assert "sk-wrong" not in str(info.value.body)
    assert stack.emulator_requests() == []


def test_request_cap_header_refuses_before_upstream(stack):
    stack.clear_emulator()
    with pytest.raises(openai.APIStatusError) as info:
        client(stack, "sk-team-a").chat.completions.create(
            model="gpt-4o", messages=msg(), extra_headers={"x-aperture-max-cost-usd": "0.0001"})
    assert info.value.status_code == 402
    assert info.value.body["code"] in ("max_cost_exceeded", "budget_exceeded")
    assert stack.emulator_requests() == []
    with pytest.raises(openai.BadRequestError) as bad:
        client(stack, "sk-team-a").chat.completions.create(
            model="gpt-4o", messages=msg(), extra_headers={"x-aperture-max-cost-usd": "lots"})
    assert bad.value.body["code"] == "invalid_header"


def test_rpm_limit_answers_429_with_retry_after(stack):
    c = client(stack, "sk-limited")
    for _ in range(2):
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    stack.clear_emulator()
    with pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["code"] == "rate_limit_exceeded"
    assert float(info.value.response.headers["retry-after"]) > 0
    assert stack.emulator_requests() == []


def test_daily_team_budget_reserves_then_settles_to_billed(stack):
    gateway = stack.app.state.gateway
    before = gateway.ledger.spent_today("a")
    raw = client(stack, "sk-team-a").chat.completions.with_raw_response.create(model="gpt-4o", messages=msg(), max_tokens=64)
    raw.parse()
    stack.flush()
    with duckdb.connect(str(stack.db), read_only=True) as conn:
        billed = conn.execute("SELECT billed_cost_usd FROM request_spans WHERE request_id = ?",
                              [raw.headers["x-aperture-request-id"]]).fetchone()[0]
    assert gateway.ledger.spent_today("a") - before == pytest.approx(billed)
    assert billed != pytest.approx(float(raw.headers["x-aperture-estimated-cost-usd"]))


def test_team_over_daily_budget_refused_before_upstream(stack):
    c = client(stack, "sk-poor")
    c.chat.completions.create(model="gpt-4o", messages=msg(), max_tokens=16)  # ≈0.002 USD
    stack.clear_emulator()
    with pytest.raises(openai.APIStatusError) as info:
        for _ in range(3):
            c.chat.completions.create(model="gpt-4o", messages=msg(), max_tokens=16)
    assert info.value.status_code == 402
    assert info.value.body["code"] == "budget_exceeded"
    refused_after = len(stack.emulator_requests())
    assert refused_after <= 1


def test_daily_spend_survives_a_restart(tmp_path):
    overrides = {**OVERRIDES, "budgets.ledger_file": str(tmp_path / "ledger.json")}
    with running_stack(tmp_path / "first", overrides=overrides) as first:
        client(first, "sk-team-a").chat.completions.create(model="gpt-4o", messages=msg(), max_tokens=16)
        spent = first.app.state.gateway.ledger.spent_today("a")
    assert spent > 0 and (tmp_path / "ledger.json").exists()
    with running_stack(tmp_path / "second", overrides=overrides) as second:
        assert second.app.state.gateway.ledger.spent_today("a") == pytest.approx(spent)
