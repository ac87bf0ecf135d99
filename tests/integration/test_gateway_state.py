"""The gateway on state.backend redis when Redis cannot be reached: as configured, never a 500."""

from __future__ import annotations

import openai
import pytest

from aperture.servers import listen_port
from tests.integration.gateway_harness import data_url, image_message, page_png, running_stack

pytestmark = pytest.mark.slow


def _dead_redis_url() -> str:
    # a free port nobody listens on, below the ephemeral range: connections are refused (a
    # connect to an ephemeral port could be given that port as its own source and succeed)
    return f"redis://127.0.0.1:{listen_port('127.0.0.1')}/0"


@pytest.mark.parametrize("on_failure", ["closed", "open"])
def test_unreachable_redis(tmp_path, on_failure):
    overrides = {
        "virtual_keys": {"sk-a": {"team": "a", "rpm": 100}},
        "teams": {"a": {"daily_budget_usd": 1.0}},
        "state": {"backend": "redis", "url": _dead_redis_url(), "on_failure": on_failure, "timeout_s": 0.2},
    }
    with running_stack(tmp_path, overrides=overrides) as stack:
        client = openai.OpenAI(base_url=stack.gateway + "/v1", api_key="sk-a", max_retries=0, timeout=10)
        messages = image_message(data_url(page_png(32, 24)))
        if on_failure == "closed":
            with pytest.raises(openai.APIStatusError) as info:
                client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=8)
            assert info.value.status_code == 503 and info.value.body["code"] == "state_unavailable"
            assert info.value.response.headers.get("retry-after") == "1"
            assert stack.emulator_requests() == []
        else:
            answer = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=8)
            assert answer.choices[0].message.content is not None
            assert len(stack.emulator_requests()) == 1
            metrics = stack.app.state.gateway.metrics.render().decode()
            assert 'aperture_state_fallbacks_total{operation="rate_limit",outcome="local"}' in metrics
