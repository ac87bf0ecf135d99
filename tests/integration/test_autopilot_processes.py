"""The autopilot in a deployment: ``aperture emulate``, ``aperture serve`` and ``aperture
autopilot`` as processes on loopback, a client sending a steady stream to ``aperture/auto``
through the openai SDK, and no other command. Each test asserts what a user would see: the
decision the autopilot recorded, that no client request failed, and a coherent rule store.

All three run the emulator in vision mode (the real OCR model), on one workload: the first test
fills this run's OCR cache, the other two read it (the instant emulator's answers all score
near zero, so no quality test could tell a degraded candidate there)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.autopilot_cycle import (
    PROMOTION_RAILS,
    PROMOTION_ROLLOUT,
    Deployment,
    Generator,
    decided,
    traffic,
    wait_until,
    workload,
)
from collector.queries.autopilot import AutopilotEvent, recent_events
from router.rollout import DirectoryRuleStore

pytestmark = pytest.mark.slow

#: Every test runs the same workload and rails, so the second and third find the OCR answers
#: the first cached and reach the same proposal; the lease expires fast for the restart.
RAILS: dict[str, Any] = {**PROMOTION_RAILS, "lease_ttl_s": 6.0}
#: The cheaper models a candidate routes to (gpt-4o is the baseline's model: left alone).
CANDIDATE_MODELS = ("gpt-4.1-mini", "gemini-2.5-flash")
SEED, IMAGES = 7, 560


def _events(dep: Deployment) -> list[AutopilotEvent]:
    return list(reversed(recent_events(dep.db, 500)))


def _decisions(events: list[AutopilotEvent], step: str, decision: str) -> list[AutopilotEvent]:
    return [e for e in events if e.step == step and e.decision == decision]


def _canary_or_over(dep: Deployment) -> bool:
    """The canary started, or the cycle ended without one (then the assertion says why)."""
    state = dep.state()
    return state.phase == "canary" or state.last_outcome is not None


def _rules(dep: Deployment) -> DirectoryRuleStore:
    return DirectoryRuleStore(dep.rules)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("autopilot-work")


@pytest.fixture(scope="module")
def ocr_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This run's OCR cache: cold at the start of the run, shared by its tests."""
    return tmp_path_factory.mktemp("ocr-cache")


def test_promotion_untouched_in_vision_mode(work: Path, ocr_cache: Path) -> None:
    records, folder = workload(IMAGES, SEED, work)
    with Deployment(work / "promote", RAILS, rollout=PROMOTION_ROLLOUT, env={"APERTURE_CACHE_DIR": str(ocr_cache)}) as dep:
        dep.start(records)
        with traffic(Generator(dep.gateway_url, records, folder, batch=4, pace_s=2.0)) as gen:
            reached = wait_until(lambda: dep.state().last_outcome is not None, timeout_s=900)
        state = dep.state()
    events = _events(dep)
    assert reached, [f"{e.step} {e.decision} {e.reason}" for e in events if e.decision != "wait"]
    assert state.last_outcome == "promote", [f"{e.step} {e.decision} {e.reason}" for e in events]
    assert gen.failed == 0 and gen.errors == {}
    proposals = _decisions(events, "propose", "proposed")
    assert len(proposals) == 1 and proposals[0].candidate_version == state.candidate
    assert _decisions(events, "guard", "promote")
    pointer = _rules(dep).pointer()
    assert pointer.active == state.candidate and pointer.canary is None


def test_a_degraded_candidate_is_rolled_back_on_quality(work: Path, ocr_cache: Path) -> None:
    records, folder = workload(IMAGES, SEED, work)
    with Deployment(work / "rollback", RAILS, rollout=PROMOTION_ROLLOUT, env={"APERTURE_CACHE_DIR": str(ocr_cache)}) as dep:
        dep.start(records)
        with traffic(Generator(dep.gateway_url, records, folder, batch=4, pace_s=2.0)) as gen:
            assert wait_until(lambda: _canary_or_over(dep), timeout_s=600, poll_s=0.2)
            assert dep.state().phase == "canary", dep.state()
            for model in CANDIDATE_MODELS:  # from now on both cheaper models answer, but wrongly
                dep.fault(match={"model": model}, fault="garble", times=None)
            reached = wait_until(lambda: decided(dep), timeout_s=600)
        state = dep.state()
    events = _events(dep)
    assert reached, [f"{e.step} {e.decision} {e.reason}" for e in events if e.decision != "wait"]
    assert state.last_outcome == "rollback"
    assert gen.failed == 0 and gen.errors == {}
    rollback = _decisions(events, "guard", "rollback")
    assert len(rollback) == 1 and "quality" in rollback[0].reason  # the guard's test, not the request cap
    assert "max_canary_requests" not in rollback[0].reason
    pointer = _rules(dep).pointer()
    assert pointer.canary is None and pointer.active != state.candidate


def test_kill_9_during_the_canary_then_a_restart_leaves_one_coherent_state(work: Path, ocr_cache: Path) -> None:
    records, folder = workload(IMAGES, SEED, work)
    with Deployment(work / "kill", RAILS, rollout=PROMOTION_ROLLOUT, env={"APERTURE_CACHE_DIR": str(ocr_cache)}) as dep:
        dep.start(records)
        with traffic(Generator(dep.gateway_url, records, folder, batch=4, pace_s=2.0)) as gen:
            assert wait_until(lambda: _canary_or_over(dep), timeout_s=600, poll_s=0.2)
            assert dep.state().phase == "canary", dep.state()
            candidate = dep.state().candidate
            dep.kill_autopilot()
            assert _rules(dep).pointer().canary == candidate  # the canary keeps serving, unattended
            dep.start_autopilot()
            reached = wait_until(lambda: decided(dep), timeout_s=600)
        state = dep.state()
    events = _events(dep)
    assert reached, [f"{e.step} {e.decision} {e.reason}" for e in events if e.decision != "wait"]
    assert gen.failed == 0 and gen.errors == {}
    assert len(_decisions(events, "propose", "proposed")) == 1  # no double proposal
    assert len(_decisions(events, "canary", "start")) == 1  # the restarted one followed the same canary
    decisions = [e for e in events if e.step == "guard" and e.decision in ("promote", "rollback")]
    assert len(decisions) == 1 and decisions[0].candidate_version == candidate == state.candidate
    assert decisions[0].instance != _decisions(events, "canary", "start")[0].instance  # decided by the restart
    store = _rules(dep)
    assert store.pointer().canary is None  # no orphaned canary
    assert len(store.list()) == 2  # the baseline and the one proposal
