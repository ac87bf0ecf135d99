"""The guard's defaults keep the autopilot's promise; a looser guard is named, not refused."""

from __future__ import annotations

from router.rollout.settings import AutopilotSettings, RolloutSettings, promise_gap


def test_the_default_guard_rules_out_what_the_optimizer_tolerates() -> None:
    rollout, autopilot = RolloutSettings(), AutopilotSettings()
    assert rollout.delta <= autopilot.tolerance
    assert promise_gap(rollout, autopilot) is None


def test_a_guard_looser_than_the_tolerance_is_named_with_both_numbers() -> None:
    gap = promise_gap(RolloutSettings(delta=0.05), AutopilotSettings(tolerance=0.01))
    assert gap is not None and "0.05" in gap and "0.01" in gap and "5 points" in gap
    assert promise_gap(RolloutSettings(delta=0.02), AutopilotSettings(tolerance=0.02)) is None
