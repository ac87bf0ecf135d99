"""Shadows the gateway sends while a canary runs, through the real gateway and emulator on loopback.

A canary-arm request is re-sent on the active version in the background: the client's answer
is the canary's, the shadow is traced as replay + shadow on the active arm, it takes nothing
from the client's budget, and the day's shadow cap holds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from router.rollout.store import DirectoryRuleStore
from tests.integration.gateway_harness import data_url, image_message, page_png, running_stack
from tests.integration.test_rollout_gateway import (
    client_for,
    metric,
    post,
    route_only,
    wait_for,
    wait_served,
)

pytestmark = pytest.mark.slow


def _canary(stack: Any, tmp_path: Path) -> str:
    store = DirectoryRuleStore(tmp_path / "rules")
    version = store.propose(route_only("cheap", "gpt-4.1-mini", "high"), author="test")
    store.start_canary(version.id, 0.5, actor="test")
    wait_served(stack, store)
    return version.id


def _wait_for_upstream_calls(stack: Any, n: int, timeout_s: float = 20.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        log = stack.emulator_requests()
        if len(log) >= n or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def _settled(sender: Any) -> None:
    """Wait until no shadow is in flight: the emulator logs a call before the gateway has billed
    it, counted it and ended its span."""
    wait_for(lambda: sender.in_flight == 0, timeout_s=20.0, what="the shadows in flight to finish")


def _rows(db: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute(
            "SELECT arm, route, coalesce(replay, false), coalesce(shadow, false), ruleset_version, reference_id, "
            "billed_cost_usd FROM request_spans ORDER BY ts").fetchall()


#: Every test splits on its own reference ids (``routing.sticky``), so which requests the canary
#: gets is fixed, not a draw that misses one arm now and then.
STICKY = {"routing.sticky": "reference"}


def test_each_canary_request_is_shadowed_on_the_active_version(tmp_path: Path) -> None:
    overrides = {"routing.poll_interval_s": 0.02, "rollout.shadow_fraction": 1.0, **STICKY}
    with running_stack(tmp_path, overrides=overrides, rules_store=tmp_path / "rules") as stack:
        candidate = _canary(stack, tmp_path)
        stack.clear_emulator()
        client = client_for(stack)
        image = data_url(page_png(96, 48, "SHADOW 42"))
        on_canary = []
        for i in range(12):
            raw = post(client, image_message(image), extra_headers={"x-aperture-reference-id": f"ref-{i}"})
            if raw.headers["x-aperture-ruleset"] == candidate:
                assert raw.headers["x-aperture-route"] == "gpt-4.1-mini:high"  # the client gets the canary's answer
                on_canary.append(f"ref-{i}")
        n = len(on_canary)
        assert 0 < n < 12
        log = _wait_for_upstream_calls(stack, 12 + n)
        gateway = stack.app.state.gateway
        _settled(gateway.shadows)
        models = sorted(entry["model"] for entry in log)
        assert models.count("gpt-4.1-mini") == n and models.count("gpt-4o") == 12, models
        assert gateway.shadows.stats.sent == n and gateway.shadows.stats.failed == 0
        stack.flush()
        rows = _rows(stack.db)
        user = [r for r in rows if not r[2]]
        shadows = [r for r in rows if r[3]]
        assert len(user) == 12 and sum(r[0] == "canary" for r in user) == n
        assert all(r[0] == "active" and r[1] == "gpt-4o:high" and r[2] and r[4] == "v0001" for r in shadows)
        assert sorted(r[5] for r in shadows) == sorted(on_canary)  # only canary requests, each once
        # The client's ledger holds the canary requests only; the shadows spent their own money.
        user_cost = sum(r[6] for r in user)
        shadow_cost = sum(r[6] for r in shadows)
        assert user_cost > 0 and shadow_cost > 0
        assert abs(sum(gateway.ledger.snapshot()["teams"].values()) - user_cost) < 1e-9
        assert abs(gateway.shadows.budget.spent_usd - shadow_cost) < 1e-9


def test_the_daily_shadow_cap_holds_and_the_client_never_waits(tmp_path: Path) -> None:
    overrides = {"routing.poll_interval_s": 0.02, "rollout.shadow_fraction": 1.0,
                 "rollout.shadow_max_usd_per_day": 0.000001, **STICKY}
    with running_stack(tmp_path, overrides=overrides, rules_store=tmp_path / "rules") as stack:
        _canary(stack, tmp_path)
        stack.clear_emulator()
        client = client_for(stack)
        for i in range(8):
            post(client, image_message(data_url(page_png(96, 48, "CAP"))), extra_headers={"x-aperture-reference-id": f"c{i}"})
        gateway = stack.app.state.gateway
        _settled(gateway.shadows)
        # Each shadow was granted less than its estimate and refused before anything left.
        assert gateway.shadows.stats.failed > 0 and gateway.shadows.stats.sent == 0
        assert gateway.shadows.budget.spent_usd == 0.0
        assert len(stack.emulator_requests()) == 8
        # A cap whose whole day could never pay for one shadow does not hold the canary: it serves
        # as configured (unpaired), and the autopilot's max_canary_requests ends it.
        versions = [post(client, image_message(data_url(page_png(96, 48, "CAP"))),
                         extra_headers={"x-aperture-reference-id": f"d{i}"}).headers["x-aperture-ruleset"]
                    for i in range(8)]
        assert len(set(versions)) == 2 and gateway.shadows.stats.diverted == 0


@pytest.mark.parametrize("paired", [True, False])
def test_a_canary_request_whose_shadow_the_day_cannot_pay_is_served_by_the_active_version(
        tmp_path: Path, paired: bool) -> None:
    overrides = {"routing.poll_interval_s": 0.02, "rollout.shadow_fraction": 1.0, "rollout.paired": paired, **STICKY}
    with running_stack(tmp_path, overrides=overrides, rules_store=tmp_path / "rules") as stack:
        candidate = _canary(stack, tmp_path)
        client = client_for(stack)
        image = image_message(data_url(page_png(96, 48, "NO PAIR")))
        gateway = stack.app.state.gateway
        sender = gateway.shadows
        i = 0
        while not sender.recent_estimates:  # until one shadow was priced
            post(client, image, extra_headers={"x-aperture-reference-id": f"p{i}"})
            i += 1
            time.sleep(0.05)
        _settled(sender)  # the priced shadow may still be on its way to the emulator
        price = min(sender.recent_estimates)
        sender.budget.spent_usd = sender.budget.cap_usd - 4 * price  # the day's cap nearly spent
        stack.clear_emulator()
        before = (sender.stats.sent, sender.stats.failed)
        versions = [post(client, image, extra_headers={"x-aperture-reference-id": f"n{i}"}).headers["x-aperture-ruleset"]
                    for i in range(16)]
        _settled(sender)
        served = stack.emulator_requests()
        if paired:
            # A slot's share (half a shadow) cannot pay for a pair: the canary serves nobody.
            assert set(versions) == {"v0001"}
            assert len(served) == 16 and (sender.stats.sent, sender.stats.failed) == before
            assert sender.stats.diverted > 0
            assert metric(stack, 'aperture_shadows_total{outcome="diverted"}') == sender.stats.diverted
        else:
            # The two-arm guard needs no pairs: the split stands, and the unpaid shadows are refused.
            assert candidate in versions and "v0001" in versions and sender.stats.diverted == 0
            assert len(served) == 16 and sender.stats.failed - before[1] == versions.count(candidate)
