"""The autopilot's state machine on a real trace store and a real rule store.

Only the expensive steps (scoring, the search, the guard's statistics) are scripted; the rule
store, the lease, the state file, the events table and the webhook receiver are real.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aperture.autopilot.controller import Autopilot
from aperture.autopilot.lease import FileLease, LeaseLost
from aperture.autopilot.state import StateFile
from aperture.autopilot.steps import GuardVerdict, SearchOutcome, StoreLoopSteps
from aperture.autopilot.webhook import Webhook
from collector.queries.autopilot import recent_events
from collector.store import insert_rows, open_store
from router.config import load_config
from router.rollout.settings import AutopilotSettings
from router.rollout.store import DirectoryRuleStore

T0 = datetime(2026, 12, 1, 12, 0, 0)
RULES = "version: 1\nrules: []\n"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class ScriptedSteps(StoreLoopSteps):
    """Real rule-store steps; scripted score, search and guard."""

    def __init__(self, store: DirectoryRuleStore, db: Path, verdicts: list[str], savings: float = 0.4) -> None:
        self.store = store
        self.db = db
        self.verdicts = verdicts
        self.savings = savings
        self.calls: list[str] = []
        self.validate = None

    def score(self) -> int:
        self.calls.append("score")
        return 0

    def search(self, settings: AutopilotSettings, cycle_id: str) -> SearchOutcome:
        self.calls.append("search")
        proposal = SimpleNamespace(text=RULES + f"# {cycle_id}\n", provenance={
            "predicted_cost_per_request_usd": 1 - self.savings, "baseline_cost_per_request_usd": 1.0})
        if self.savings < settings.min_savings:
            return SearchOutcome(None, "nothing better", details={"savings": self.savings})
        return SearchOutcome(proposal, f"saves {self.savings:.0%}", details={"savings": self.savings})

    def propose(self, proposal: Any, cycle_id: str) -> str:
        self.calls.append("propose")
        return super().propose(proposal, cycle_id)

    def start_canary(self, version_id: str, fraction: float) -> Any:
        self.calls.append("start_canary")
        return self.store.start_canary(version_id, fraction, actor="autopilot")

    def guard(self) -> GuardVerdict:
        self.calls.append("guard")
        action = self.verdicts.pop(0) if self.verdicts else "extend"
        if action == "promote":
            self.store.promote(actor="autopilot", reason="scripted")
        elif action == "rollback":
            self.store.rollback(actor="autopilot", reason="scripted")
        return GuardVerdict(action, f"scripted {action}")

    def rollback(self, reason: str) -> Any:
        self.calls.append("rollback")
        return self.store.rollback(actor="autopilot", reason=reason)


def _traffic(db: Path, n: int, start: datetime, *, scored: bool = True, cost: float = 0.01) -> None:
    requests, scores = [], []
    for i in range(n):
        span = f"s{start:%H%M%S}{i:05d}"
        requests.append({"trace_id": f"t{span}", "span_id": span, "ts": start + timedelta(seconds=i),
                         "status": "ok", "billed_cost_usd": cost, "task": "transcribe", "replay": False})
        if scored:
            scores.append({"trace_id": f"t{span}", "span_id": span, "evaluator": "ocr_faithfulness",
                           "evaluator_version": "1", "status": "scored", "score": 0.9, "passed": True,
                           "ts": start})
    with open_store(db) as conn:
        insert_rows(conn, "request_spans", requests)
        insert_rows(conn, "eval_scores", scores)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    db = tmp_path / "aperture.duckdb"
    with open_store(db):
        pass
    store = DirectoryRuleStore(tmp_path / "rules")
    store.activate(store.propose(RULES, author="test").id, actor="test")
    yield {"db": db, "store": store, "folder": tmp_path / "rules" / "autopilot", "clock": Clock()}


def _pilot(world: dict[str, Any], steps: ScriptedSteps, owner: str = "a", webhook: Webhook | None = None,
           state_file: StateFile | None = None, **settings: Any) -> Autopilot:
    merged = {"min_evidence": 10, "min_new_requests": 20, "cooldown_s": 60, "interval_s": 1, **settings}
    clock = world["clock"]
    return Autopilot(AutopilotSettings(**merged), world["db"], steps, state_file or StateFile(world["folder"]),
                     FileLease(world["folder"], owner, 30, clock=lambda: clock().timestamp()),
                     webhook=webhook, clock=clock)


class Receiver:
    """A loopback webhook receiver that keeps every JSON body it is sent."""

    def __init__(self) -> None:
        bodies: list[dict[str, Any]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.bodies = bodies
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_a_full_cycle_proposes_canaries_promotes_and_cools_down(world: dict[str, Any], receiver: Receiver) -> None:
    steps = ScriptedSteps(world["store"], world["db"], ["extend", "promote"])
    pilot = _pilot(world, steps, webhook=Webhook(receiver.url))
    _traffic(world["db"], 5, T0 - timedelta(minutes=5))
    assert pilot.tick().phase == "watching"  # 5 scored requests: not evidence enough
    assert "search" not in steps.calls
    _traffic(world["db"], 30, T0 - timedelta(minutes=4))
    state = pilot.tick()
    assert state.phase == "canary" and state.candidate is not None
    assert world["store"].pointer().canary == state.candidate
    assert pilot.tick().phase == "canary"  # guard: extend
    state = pilot.tick()
    assert state.phase == "cooldown" and state.last_outcome == "promote"
    assert world["store"].pointer().active == state.candidate
    world["clock"].now += timedelta(seconds=61)
    assert pilot.tick().phase == "watching"
    assert [b["event"] for b in receiver.bodies] == ["proposal", "promotion"]
    assert receiver.bodies[0]["version"] == state.candidate
    decisions = [(e.step, e.decision) for e in reversed(recent_events(world["db"], 50))]
    assert ("search", "start") in decisions and ("propose", "proposed") in decisions
    assert ("guard", "promote") in decisions and ("cooldown", "start") in decisions
    assert pilot.metrics.cycles.labels(outcome="promote")._value.get() == 1


class WatchedStateFile(StateFile):
    """A state file that notes, at each save, which decisions the events table already holds."""

    def __init__(self, folder: Path, db: Path) -> None:
        super().__init__(folder)
        self.db = db
        self.saves: list[tuple[str, set[tuple[str, str]]]] = []

    def save(self, state: Any) -> None:
        self.saves.append((state.phase, {(e.step, e.decision) for e in recent_events(self.db, 50)}))
        super().save(state)


def test_a_phase_is_saved_only_after_its_decision_is_recorded(world: dict[str, Any]) -> None:
    """Whoever reads the state file (a dashboard, a restart, a kill -9 test) and sees "canary"
    finds the canary's start in the events table: the decision is written first."""
    steps = ScriptedSteps(world["store"], world["db"], ["promote"])
    state_file = WatchedStateFile(world["folder"], world["db"])
    pilot = _pilot(world, steps, state_file=state_file)
    _traffic(world["db"], 30, T0 - timedelta(minutes=4))
    assert pilot.tick().phase == "canary"
    assert pilot.tick().phase == "cooldown"
    needs = {"searching": ("search", "start"), "canary": ("canary", "start"), "cooldown": ("cooldown", "start")}
    saved = {phase for phase, _ in state_file.saves}
    assert set(needs) <= saved
    for phase, recorded in state_file.saves:
        if phase in needs:
            assert needs[phase] in recorded, (phase, recorded)
    proposing = [recorded for phase, recorded in state_file.saves if phase == "proposing"]
    assert ("propose", "proposed") in proposing[-1]  # the save that holds the candidate's id


def test_a_second_controller_waits_for_the_lease(world: dict[str, Any]) -> None:
    _traffic(world["db"], 30, T0 - timedelta(minutes=4))
    first = _pilot(world, ScriptedSteps(world["store"], world["db"], []), owner="a")
    second_steps = ScriptedSteps(world["store"], world["db"], [])
    second = _pilot(world, second_steps, owner="b")
    assert first.tick() is not None
    assert second.tick() is None and second_steps.calls == []
    world["clock"].now += timedelta(seconds=31)  # a's lease expired: it stopped renewing
    assert second.tick() is not None


class StalledSearch(ScriptedSteps):
    """A search that outlasts the lease: meanwhile the clock passes its expiry and another
    controller takes it (as after a long stall of this process)."""

    def __init__(self, *args: Any, world: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.world = world

    def search(self, settings: AutopilotSettings, cycle_id: str) -> SearchOutcome:
        outcome = super().search(settings, cycle_id)
        self.world["clock"].now += timedelta(seconds=31)
        clock = self.world["clock"]
        assert FileLease(self.world["folder"], "b", 30, clock=lambda: clock().timestamp()).acquire()
        return outcome


def test_a_search_that_outlasts_its_lease_proposes_nothing(world: dict[str, Any]) -> None:
    _traffic(world["db"], 30, T0 - timedelta(minutes=4))
    steps = StalledSearch(world["store"], world["db"], [], world=world)
    pilot = _pilot(world, steps, owner="a")
    with pytest.raises(LeaseLost, match="taken by b"):
        pilot.tick()
    assert "search" in steps.calls and "propose" not in steps.calls
    assert len(world["store"].list()) == 1 and world["store"].pointer().canary is None
    pilot.run(threading.Event(), once=True)  # the loop reports it and waits; it never acts
    assert "propose" not in steps.calls and pilot.metrics.leader._value.get() == 0.0
    successor_steps = ScriptedSteps(world["store"], world["db"], [])
    state = _pilot(world, successor_steps, owner="b").tick()  # b recovers the half-done search
    assert [e.decision for e in recent_events(world["db"], 50)].count("abandon") == 1
    assert state is not None and "propose" in successor_steps.calls
    assert len(world["store"].list()) == 2  # exactly one proposal, b's


def test_a_held_lease_is_renewed_while_a_long_step_runs(tmp_path: Path) -> None:
    now = [T0.timestamp()]
    lease = FileLease(tmp_path, "a", 30, clock=lambda: now[0])
    rival = FileLease(tmp_path, "b", 30, clock=lambda: now[0])
    assert lease.acquire()
    with lease.kept(every_s=0.01):
        for _ in range(5):  # 100 s of the lease's clock, three times its TTL
            now[0] += 20
            deadline = time.monotonic() + 10
            while (lease.holder() is None or lease.holder().expires_at <= now[0] + 10) and time.monotonic() < deadline:
                time.sleep(0.005)
            assert not rival.acquire()
    now[0] += 31  # no longer kept: it lapses
    assert rival.acquire()
    with pytest.raises(LeaseLost):
        lease.confirm()


def test_dry_run_proposes_but_never_starts_a_canary(world: dict[str, Any]) -> None:
    steps = ScriptedSteps(world["store"], world["db"], [])
    _traffic(world["db"], 30, T0 - timedelta(minutes=4))
    state = _pilot(world, steps, dry_run=True).tick()
    assert state.phase == "cooldown" and state.last_outcome == "dry_run"
    assert "propose" in steps.calls and "start_canary" not in steps.calls
    assert world["store"].pointer().canary is None


def test_nothing_better_cools_down_without_proposing(world: dict[str, Any]) -> None:
    steps = ScriptedSteps(world["store"], world["db"], [], savings=0.01)
    _traffic(world["db"], 30, T0 - timedelta(minutes=4))
    state = _pilot(world, steps).tick()
    assert state.phase == "cooldown" and state.last_outcome == "no_proposal"
    assert len(world["store"].list()) == 1


def test_an_undecided_canary_is_rolled_back_at_its_request_cap(world: dict[str, Any]) -> None:
    steps = ScriptedSteps(world["store"], world["db"], [])
    pilot = _pilot(world, steps, max_canary_requests=3)
    _traffic(world["db"], 30, T0 - timedelta(minutes=4))
    state = pilot.tick()
    rows = [{"trace_id": f"c{i}", "span_id": f"c{i}", "ts": T0 + timedelta(seconds=i), "status": "ok",
             "ruleset_version": state.candidate, "arm": "canary", "replay": False} for i in range(3)]
    with open_store(world["db"]) as conn:
        insert_rows(conn, "request_spans", rows)
    state = pilot.tick()
    assert state.phase == "cooldown" and state.last_outcome == "rollback"
    assert world["store"].pointer().canary is None and "rollback" in steps.calls


def test_an_undecided_canary_is_rolled_back_at_its_time_limit(world: dict[str, Any]) -> None:
    steps = ScriptedSteps(world["store"], world["db"], [])
    pilot = _pilot(world, steps, max_canary_s=3600)
    _traffic(world["db"], 30, T0 - timedelta(minutes=4))
    state = pilot.tick()
    assert state.phase == "canary"
    world["clock"].now += timedelta(minutes=59)
    assert pilot.tick().phase == "canary"  # undecided, within the hour, no canary request served
    world["clock"].now += timedelta(minutes=2)
    state = pilot.tick()
    assert state.phase == "cooldown" and state.last_outcome == "rollback"
    assert world["store"].pointer().canary is None
    assert any("max_canary_s 3600" in e.reason for e in recent_events(world["db"], 5))


def test_by_default_an_undecided_canary_is_rolled_back_after_a_week(world: dict[str, Any]) -> None:
    """A quiet deployment that never reaches ``max_canary_requests`` is not left on an
    unproven version for ever."""
    steps = ScriptedSteps(world["store"], world["db"], [])
    pilot = _pilot(world, steps)
    _traffic(world["db"], 30, T0 - timedelta(minutes=4))
    assert pilot.tick().phase == "canary"
    world["clock"].now += timedelta(days=6, hours=23)
    assert pilot.tick().phase == "canary"
    world["clock"].now += timedelta(hours=2)
    state = pilot.tick()
    assert state.phase == "cooldown" and state.last_outcome == "rollback"
    assert world["store"].pointer().canary is None
    assert any("max_canary_s 604800" in e.reason for e in recent_events(world["db"], 5))


def test_paused_does_nothing_until_resumed(world: dict[str, Any]) -> None:
    steps = ScriptedSteps(world["store"], world["db"], [])
    _traffic(world["db"], 30, T0 - timedelta(minutes=4))
    StateFile(world["folder"]).pause("maintenance")
    pilot = _pilot(world, steps)
    assert pilot.tick().phase == "watching" and steps.calls == []
    assert recent_events(world["db"], 1)[0].decision == "paused"
    assert StateFile(world["folder"]).resume()
    assert pilot.tick().phase == "canary"


def test_a_freeze_window_starts_nothing(world: dict[str, Any]) -> None:
    steps = ScriptedSteps(world["store"], world["db"], [])
    _traffic(world["db"], 30, T0 - timedelta(minutes=4))
    window = {"days": ["tue"], "start": "11:00", "end": "13:00"}  # T0 is Tuesday 12:00 UTC
    assert _pilot(world, steps, freeze_windows=[window]).tick().phase == "watching"
    assert "search" not in steps.calls


# -- restarts -------------------------------------------------------------------------------
def _crash_in(world: dict[str, Any], phase: str, **fields: Any) -> None:
    state_file = StateFile(world["folder"])
    state_file.save(state_file.load().moved(phase, T0, cycle_id="c1", **fields))


def test_killed_during_a_search_abandons_it(world: dict[str, Any]) -> None:
    _crash_in(world, "searching")
    steps = ScriptedSteps(world["store"], world["db"], [])
    state = _pilot(world, steps).tick()
    assert state.phase == "watching"
    assert recent_events(world["db"], 5)[-1].decision == "abandon"


def test_killed_after_proposing_starts_that_canary_without_a_second_proposal(world: dict[str, Any]) -> None:
    store: DirectoryRuleStore = world["store"]
    version = store.propose(RULES + "# c1\n", author="autopilot", provenance={"autopilot_cycle": "c1"})
    _crash_in(world, "proposing")  # the candidate id never reached the state file
    steps = ScriptedSteps(store, world["db"], [])
    state = _pilot(world, steps).tick()
    assert state.phase == "canary" and state.candidate == version.id
    assert store.pointer().canary == version.id and "propose" not in steps.calls
    assert len(store.list()) == 2


def test_killed_after_starting_the_canary_adopts_it(world: dict[str, Any]) -> None:
    store: DirectoryRuleStore = world["store"]
    version = store.propose(RULES + "# c1\n", author="autopilot", provenance={"autopilot_cycle": "c1"})
    store.start_canary(version.id, 0.25, actor="autopilot")
    _crash_in(world, "watching")  # killed before the state said "proposing" was done
    steps = ScriptedSteps(store, world["db"], [])
    state = _pilot(world, steps).tick()
    assert state.phase == "canary" and state.candidate == version.id and state.cycle_id == "c1"
    assert "start_canary" not in steps.calls and "search" not in steps.calls


def test_a_pending_proposal_waits_for_a_persons_canary_and_notices_a_manual_promotion(world: dict[str, Any]) -> None:
    store: DirectoryRuleStore = world["store"]
    version = store.propose(RULES + "# c1\n", author="autopilot", provenance={"autopilot_cycle": "c1"})
    _crash_in(world, "proposing", candidate=version.id)
    by_hand = store.propose(RULES + "# by hand\n", author="ana")
    store.start_canary(by_hand.id, 0.1, actor="ana")
    steps = ScriptedSteps(store, world["db"], [])
    pilot = _pilot(world, steps)
    for _ in range(2):
        state = pilot.tick()
        assert state.phase == "proposing" and store.pointer().canary == by_hand.id  # never replaced
    assert "start_canary" not in steps.calls
    assert [e.decision for e in recent_events(world["db"], 50)].count("wait") == 1
    store.rollback(actor="ana", reason="done with it")
    store.activate(version.id, actor="ana")  # and she made the proposal active herself
    state = pilot.tick()
    assert state.phase == "cooldown" and state.last_outcome == "promote"
    assert "start_canary" not in steps.calls and store.pointer().active == version.id


def test_a_canary_a_person_started_is_left_alone(world: dict[str, Any]) -> None:
    store: DirectoryRuleStore = world["store"]
    store.start_canary(store.propose(RULES + "# by hand\n", author="ana").id, 0.1, actor="ana")
    _traffic(world["db"], 30, T0 - timedelta(minutes=4))
    steps = ScriptedSteps(store, world["db"], [])
    assert _pilot(world, steps).tick().phase == "watching"
    assert "search" not in steps.calls and "guard" not in steps.calls


def test_an_unreadable_store_makes_it_wait_and_never_act(world: dict[str, Any], tmp_path: Path) -> None:
    broken = tmp_path / "not-a-store.duckdb"
    broken.write_bytes(b"this is not duckdb")
    steps = ScriptedSteps(world["store"], broken, [])
    pilot = _pilot(world, steps)
    pilot.db = broken
    pilot.run(threading.Event(), once=True)  # no exception escapes
    assert "propose" not in steps.calls and world["store"].pointer().canary is None
    assert pilot.metrics.cycles.labels(outcome="error")._value.get() == 1


class FailingSearch(ScriptedSteps):
    """A search that raises once (a locked store, a bug), after its phase was saved."""

    def search(self, settings: AutopilotSettings, cycle_id: str) -> SearchOutcome:
        if "search" not in self.calls:
            self.calls.append("search")
            raise RuntimeError("the store is locked")
        return super().search(settings, cycle_id)


def test_a_step_that_fails_half_way_is_reconciled_on_the_next_tick(world: dict[str, Any]) -> None:
    """The failed search left "searching" saved; the next tick abandons it as after a kill
    and searches again, instead of waiting in that phase for ever."""
    steps = FailingSearch(world["store"], world["db"], [])
    pilot = _pilot(world, steps)
    _traffic(world["db"], 30, T0 - timedelta(minutes=4))
    pilot.run(threading.Event(), once=True)
    assert StateFile(world["folder"]).load().phase == "searching"
    assert pilot.metrics.cycles.labels(outcome="error")._value.get() == 1
    state = pilot.tick()  # abandons the half-done search, then the triggers still call for one
    assert [e.decision for e in recent_events(world["db"], 50)].count("abandon") == 1
    assert state.phase == "canary" and len(world["store"].list()) == 2


def test_a_decision_whose_cooldown_failed_to_save_is_not_announced_twice(
        world: dict[str, Any], receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard promoted, recorded it and called the webhook; then the cooldown could not be
    written (a locked store). The next tick finds the canary gone and only cools down."""
    import aperture.autopilot.controller as controller

    steps = ScriptedSteps(world["store"], world["db"], ["promote"])
    pilot = _pilot(world, steps, webhook=Webhook(receiver.url))
    _traffic(world["db"], 30, T0 - timedelta(minutes=4))
    assert pilot.tick().phase == "canary"
    real = controller.record_event
    failed: list[str] = []

    def locked_once(db: Any, **row: Any) -> None:
        if row["step"] == "cooldown" and not failed:
            failed.append(row["decision"])
            raise RuntimeError("the store is locked")
        real(db, **row)

    monkeypatch.setattr(controller, "record_event", locked_once)
    pilot.run(threading.Event(), once=True)
    assert failed and StateFile(world["folder"]).load().phase == "canary"
    state = pilot.tick()
    assert state.phase == "cooldown" and state.last_outcome == "promote"
    decisions = [(e.step, e.decision) for e in recent_events(world["db"], 50)]
    assert decisions.count(("guard", "promote")) == 1 and not any(d.startswith("ended_") for _, d in decisions)
    assert decisions.count(("cooldown", "start")) == 1
    assert [b["event"] for b in receiver.bodies] == ["proposal", "promotion"]
    assert pilot.metrics.cycles.labels(outcome="promote")._value.get() == 1


class StuckCanary(ScriptedSteps):
    def start_canary(self, version_id: str, fraction: float) -> Any:
        self.calls.append("start_canary")
        raise RuntimeError("the rule store refuses")


def test_a_canary_that_cannot_be_started_is_retried_without_flooding_the_log(world: dict[str, Any]) -> None:
    store: DirectoryRuleStore = world["store"]
    version = store.propose(RULES + "# c1\n", author="autopilot", provenance={"autopilot_cycle": "c1"})
    _crash_in(world, "proposing", candidate=version.id)
    steps = StuckCanary(store, world["db"], [])
    pilot = _pilot(world, steps)
    for _ in range(3):
        pilot.run(threading.Event(), once=True)
        world["clock"].now += timedelta(seconds=15)
    assert steps.calls.count("start_canary") == 3  # tried on every tick
    assert [e.decision for e in recent_events(world["db"], 50)].count("resume") == 1
    assert pilot.metrics.cycles.labels(outcome="error")._value.get() == 3
    assert "propose" not in steps.calls and len(store.list()) == 2


def test_the_config_refuses_rails_that_contradict_each_other(tmp_path: Path) -> None:
    text = Path("examples/emulated.yaml").read_text() + "\nautopilot:\n  canary_fraction: 0.8\n  max_canary_fraction: 0.5\n"
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(Exception, match="max_canary_fraction"):
        load_config(path)


def test_the_days_shadow_spend_is_read_from_the_store(world: dict[str, Any], tmp_path: Path) -> None:
    from collector.semconv import utc_now
    from router.rollout.settings import RolloutSettings

    config: Any = SimpleNamespace(rollout=RolloutSettings(shadow_fraction=1.0, shadow_max_usd_per_day=1.0))
    steps = StoreLoopSteps(config, world["db"], world["store"], blob_dir=tmp_path / "blobs", workdir=tmp_path)

    def shadows(n: int, cost: float) -> None:
        rows = [{"trace_id": f"sh{i}", "span_id": f"sh{i}", "ts": utc_now(), "status": "ok", "billed_cost_usd": cost,
                 "replay": True, "shadow": True} for i in range(n)]
        with open_store(world["db"]) as conn:
            insert_rows(conn, "request_spans", rows)

    shadows(2, 0.1)
    assert steps._shadow_spend() == "shadows today: 0.20 USD across the gateways, cap 1.00 USD per gateway"
    shadows(1, 0.75)
    assert "0.95 USD" in steps._shadow_spend()
