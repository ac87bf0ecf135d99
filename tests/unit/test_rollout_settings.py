"""The guard's defaults keep the autopilot's promise; a looser guard is named, not refused."""

from __future__ import annotations

from router.rollout.settings import AutopilotSettings, RolloutSettings, promise_gap, two_arm_gap


def test_the_default_guard_rules_out_what_the_optimizer_tolerates() -> None:
    rollout, autopilot = RolloutSettings(), AutopilotSettings()
    assert rollout.delta <= autopilot.tolerance
    assert promise_gap(rollout, autopilot) is None


def test_a_guard_looser_than_the_tolerance_is_named_with_both_numbers() -> None:
    gap = promise_gap(RolloutSettings(delta=0.05), AutopilotSettings(tolerance=0.01))
    assert gap is not None and "0.05" in gap and "0.01" in gap and "5 points" in gap
    assert promise_gap(RolloutSettings(delta=0.02), AutopilotSettings(tolerance=0.02)) is None


def test_the_guard_is_built_from_the_rollout_section() -> None:
    from router.rollout.guard import guard_config

    config = guard_config(RolloutSettings(shadow_fraction=1.0, delta=0.02, beta=0.2, error_delta=0.07), ("ocr",))
    assert config.paired and config.evaluators == ("ocr",) and config.error_delta == 0.07
    assert (config.sequential.delta, config.sequential.beta) == (0.02, 0.2)


def test_pairs_without_shadows_fall_back_to_the_arms_and_are_named() -> None:
    from router.rollout.guard import guard_config
    from router.rollout.settings import pairing_gap

    shadowless = RolloutSettings(paired=True, shadow_fraction=0.0)
    assert not guard_config(shadowless, ("ocr",)).paired
    gap = pairing_gap(shadowless)
    assert gap is not None and "rollout.shadow_fraction" in gap and "rollout.paired: false" in gap
    assert pairing_gap(RolloutSettings(paired=False)) is None
    unpaid = RolloutSettings(paired=True, shadow_fraction=1.0, shadow_max_usd_per_day=0.0)
    assert not guard_config(unpaid, ("ocr",)).paired
    assert "rollout.shadow_max_usd_per_day is 0" in (pairing_gap(unpaid) or "")
    assert pairing_gap(RolloutSettings(shadow_fraction=0.5)) is None


def test_two_arms_at_a_one_point_delta_are_named_with_the_canary_cap() -> None:
    autopilot = AutopilotSettings(max_canary_requests=1200)
    gap = two_arm_gap(RolloutSettings(paired=False), autopilot)
    assert gap is not None and "rollout.paired is false" in gap and "0.01" in gap and "1200" in gap
    assert two_arm_gap(RolloutSettings(paired=False, delta=0.03), autopilot) is None
    assert two_arm_gap(RolloutSettings(shadow_fraction=1.0), autopilot) is None  # pairs
