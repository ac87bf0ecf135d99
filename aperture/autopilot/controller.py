"""``aperture autopilot``: the loop's controller, running beside the gateways.

Every tick it renews its lease (one active controller per deployment), scores new spans,
then acts on its phase: watching → search (replay within the spend cap, optimize) → propose →
canary → the guard's decision → cooldown → watching. Each decision is a row of
``autopilot_events`` and a span event; the state is saved before and after each step, so a
controller killed anywhere resumes or cleanly abandons the step it was in (``recover``).

Example::

    pilot = Autopilot(settings, db, steps, StateFile(folder), FileLease(folder, "host:pid", 120))
    pilot.run(stop_event)            # or pilot.tick() once
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from opentelemetry import trace

from aperture.autopilot.lease import FileLease, LeaseLost
from aperture.autopilot.metrics import AutopilotMetrics
from aperture.autopilot.state import AutopilotState, Baseline, StateFile
from aperture.autopilot.steps import LoopSteps, SearchOutcome, start_of_day
from aperture.autopilot.triggers import should_search
from aperture.autopilot.webhook import Webhook
from collector.queries.autopilot import (
    canary_requests,
    cluster_sizes,
    cycle_decided,
    record_event,
    replay_spend_usd,
    traffic_since,
)
from collector.semconv import utc_now
from router.rollout.settings import AutopilotSettings

log = logging.getLogger("aperture.autopilot")

#: A "still waiting" decision is recorded again at most this often when nothing changes.
QUIET_REPEAT = timedelta(minutes=10)


class Autopilot:
    def __init__(
        self,
        settings: AutopilotSettings,
        db: Path,
        steps: LoopSteps,
        state_file: StateFile,
        lease: FileLease,
        *,
        webhook: Webhook | None = None,
        metrics: AutopilotMetrics | None = None,
        tracer_provider: Any = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.db = db
        self.steps = steps
        self.state_file = state_file
        self.lease = lease
        self.webhook = webhook or Webhook(settings.webhook_url, settings.webhook_timeout_s)
        self.metrics = metrics or AutopilotMetrics()
        self.clock = clock
        self._tracer = (tracer_provider.get_tracer("aperture.autopilot") if tracer_provider
                        else trace.get_tracer("aperture.autopilot"))
        self._recovered = False
        self._quiet: tuple[str, datetime] | None = None

    # -- recording -----------------------------------------------------------------------------
    def record(self, state: AutopilotState, step: str, decision: str, reason: str, **details: Any) -> None:
        """One decision: a row in ``autopilot_events``, a span event and a log line."""
        self._quiet = None
        record_event(self.db, instance=self.lease.owner, cycle_id=state.cycle_id, state=state.phase, step=step,
                     decision=decision, reason=reason, candidate_version=state.candidate, details=details)
        with self._tracer.start_as_current_span(f"autopilot.{step}") as span:
            span.set_attribute("aperture.autopilot.phase", state.phase)
            span.add_event(decision, {"reason": reason, "cycle_id": state.cycle_id or "",
                                      "candidate": state.candidate or ""})
        log.info("autopilot %s: %s: %s", step, decision, reason)

    def _note(self, state: AutopilotState, step: str, decision: str, reason: str) -> None:
        """A waiting decision: recorded when it changes, and again after ``QUIET_REPEAT``."""
        now = self.clock()
        key = f"{step}:{decision}"
        if self._quiet is not None and self._quiet[0] == key and now - self._quiet[1] < QUIET_REPEAT:
            return
        self.record(state, step, decision, reason)
        self._quiet = (key, now)

    def _save(self, state: AutopilotState) -> AutopilotState:
        """Persist a phase. A phase that ends a step is saved after its decision is recorded, so
        whoever sees the state file say "canary" (a dashboard, a test, a restart) finds the canary's
        start in ``autopilot_events`` too. A kill or a failure between the two leaves the older
        phase: ``recover`` reconciles a search or a proposal with the rule store, and ``_follow``
        finishes a decided canary without announcing it twice."""
        self.state_file.save(state)
        return state

    def _cool(self, state: AutopilotState, now: datetime, outcome: str) -> AutopilotState:
        until = now + timedelta(seconds=self.settings.cooldown_s)
        state = state.moved("cooldown", now, cooldown_until=until, cycles=state.cycles + 1, last_outcome=outcome)
        self.record(state, "cooldown", "start", f"{outcome}; next search not before {until:%Y-%m-%d %H:%M:%S} UTC")
        self._save(state)
        self.metrics.cycles.labels(outcome=outcome).inc()
        return state

    # -- the loop ------------------------------------------------------------------------------
    def tick(self) -> AutopilotState | None:
        """One step of the loop; None when another controller holds the lease."""
        if not self.lease.acquire():
            self.metrics.leader.set(0.0)
            self._recovered = False  # whoever held it meanwhile may have left a step half done
            holder = self.lease.holder()
            log.info("autopilot waits: lease held by %s", holder.owner if holder else "?")
            return None
        with self.lease.kept():
            now = self.clock()
            if not self._recovered:
                self.recover(now)
                self._recovered = True
            state = self.state_file.load()
            paused = self.state_file.paused()
            if paused is not None:
                self._note(state, "pause", "paused", paused)
            else:
                self.steps.score()
                state = self._advance(state, now)
            self._show(state, paused is not None)
            return state

    def run(self, stop: threading.Event, *, once: bool = False) -> None:
        """Tick every ``interval_s`` until ``stop`` is set. A store that cannot be read (locked,
        missing, corrupt) makes it wait and say so; it never acts without evidence."""
        while not stop.is_set():
            try:
                self.tick()
            except LeaseLost as exc:
                log.warning("autopilot stopped a step: %s", exc)
                self.metrics.leader.set(0.0)
                self._recovered = False
            except Exception as exc:  # noqa: BLE001 - report, wait, try again; never act on a failure
                log.warning("autopilot tick failed, waiting: %s: %s", type(exc).__name__, exc,
                            exc_info=log.isEnabledFor(logging.DEBUG))
                self.metrics.cycles.labels(outcome="error").inc()
            if once:
                return
            stop.wait(self.settings.interval_s)
        self.lease.release()

    def _advance(self, state: AutopilotState, now: datetime) -> AutopilotState:
        if state.phase in ("searching", "proposing"):
            # Within a tick a search or a proposal finishes or raises, so a tick that finds one
            # half done follows a tick that failed in it (a locked store, a bug): reconcile it
            # with the rule store as after a kill, instead of waiting in that phase for ever.
            state = self.recover(now)
        if state.phase == "canary":
            return self._follow(state, now)
        if state.phase == "cooldown":
            if state.cooldown_until is not None and now < state.cooldown_until:
                return state
            state = self._save(state.moved("watching", now, cycle_id=None, candidate=None, rollout_id=None))
        if state.phase == "watching":
            return self._watch(state, now)
        return state

    def _watch(self, state: AutopilotState, now: datetime) -> AutopilotState:
        pointer = self.steps.pointer()
        if pointer.canary is not None:
            self._note(state, "watch", "wait", f"canary {pointer.canary} runs outside the autopilot")
            return state
        window = self.settings.frozen_at(now)
        if window is not None:
            self._note(state, "watch", "frozen", f"freeze window {','.join(window.days)} {window.start}-{window.end} UTC")
            return state
        traffic = traffic_since(self.db, state.last_search.at)
        clusters = cluster_sizes(self.db)
        decision = should_search(self.settings, now, state.last_search, traffic, clusters)
        if not decision.search:
            self._note(state, "watch", "wait", decision.reason)
            return state
        cycle = f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        state = state.moved("searching", now, cycle_id=cycle, candidate=None, rollout_id=None)
        self.record(state, "search", "start", decision.reason, requests=traffic.requests, scored=traffic.scored)
        self._save(state)
        outcome = self.steps.search(self.settings, cycle)
        return self._proposed(state, now, outcome, Baseline(now, traffic.mean_cost_usd, clusters))

    def _proposed(self, state: AutopilotState, now: datetime, outcome: SearchOutcome, baseline: Baseline) -> AutopilotState:
        state = replace(state, last_search=baseline)
        if outcome.proposal is None:
            self.record(state, "search", "nothing", outcome.reason, replayed=outcome.replayed, **outcome.details)
            return self._cool(state, now, "no_proposal")
        self.lease.confirm()  # a search can outlast the lease: never propose beside a successor
        state = self._save(state.moved("proposing", now))
        version = self.steps.propose(outcome.proposal, state.cycle_id or "")
        state = replace(state, candidate=version)
        self.record(state, "propose", "proposed", outcome.reason, replayed=outcome.replayed, **outcome.details)
        self._save(state)
        self.webhook.post("proposal", {"version": version, "cycle_id": state.cycle_id, "reason": outcome.reason,
                                       **outcome.details})
        return self._start(state, now)

    def _start(self, state: AutopilotState, now: datetime) -> AutopilotState:
        if self.settings.dry_run:
            self.record(state, "canary", "dry_run", "dry_run is on: proposed, no canary started")
            return self._cool(state, now, "dry_run")
        if self.settings.frozen_at(now) is not None:
            self.record(state, "canary", "frozen", "a freeze window began: proposed, no canary started")
            return self._cool(state, now, "frozen")
        fraction = min(self.settings.canary_fraction, self.settings.max_canary_fraction)
        self.lease.confirm()
        pointer = self.steps.start_canary(state.candidate or "", fraction)
        state = state.moved("canary", now, rollout_id=pointer.rollout_id)
        self.record(state, "canary", "start", f"canary {state.candidate} at {fraction:.0%}")
        return self._save(state)

    def _follow(self, state: AutopilotState, now: datetime) -> AutopilotState:
        pointer = self.steps.pointer()
        if pointer.canary != state.candidate:
            outcome = "promote" if pointer.active == state.candidate else "rollback"
            if state.cycle_id is not None and cycle_decided(self.db, state.cycle_id) is not None:
                # Decided, recorded and announced by an earlier tick, which failed before it
                # saved the cooldown: only the cooldown is left to do.
                return self._cool(state, now, outcome)
            self.record(state, "guard", f"ended_{outcome}",
                        f"{state.candidate} is no longer canary (active {pointer.active}): decided outside this tick")
            return self._decided(state, now, outcome, "decided outside the autopilot's tick")
        self.lease.confirm()
        verdict = self.steps.guard()
        if verdict.action in ("promote", "rollback"):
            self.record(state, "guard", verdict.action, verdict.reason, n_canary=verdict.n_canary)
            return self._decided(state, now, verdict.action, verdict.reason)
        served = canary_requests(self.db, state.candidate or "", state.phase_since)
        elapsed = (now - state.phase_since).total_seconds() if state.phase_since is not None else 0.0
        reason = None
        if served >= self.settings.max_canary_requests:
            reason = (f"undecided after {served} canary requests (max_canary_requests "
                      f"{self.settings.max_canary_requests}): rolled back, nothing proven")
        elif self.settings.max_canary_s is not None and elapsed >= self.settings.max_canary_s:
            reason = (f"undecided after {elapsed:.0f} s and {served} canary requests "
                      f"(max_canary_s {self.settings.max_canary_s:g}): rolled back, nothing proven")
        if reason is not None:
            self.steps.rollback(reason)
            self.record(state, "guard", "rollback", reason, n_canary=served)
            return self._decided(state, now, "rollback", reason)
        self._note(state, "guard", verdict.action, verdict.reason)
        return state

    def _decided(self, state: AutopilotState, now: datetime, outcome: str, reason: str) -> AutopilotState:
        event = "promotion" if outcome == "promote" else "rollback"
        self.webhook.post(event, {"version": state.candidate, "cycle_id": state.cycle_id, "reason": reason})
        return self._cool(state, now, outcome)

    # -- restarts ------------------------------------------------------------------------------
    def recover(self, now: datetime) -> AutopilotState:
        """Make the saved state coherent with the rule store after a restart."""
        state = self.state_file.load()
        pointer = self.steps.pointer()
        if state.phase == "searching":
            self.record(state, "recover", "abandon", "restarted during a search: nothing was proposed")
            return self._save(state.moved("watching", now, cycle_id=None))
        if state.phase == "proposing":
            version = state.candidate or self.steps.find_proposal(state.cycle_id or "")
            if version is None:
                self.record(state, "recover", "abandon", "restarted before the proposal was written")
                return self._save(state.moved("watching", now, cycle_id=None))
            state = replace(state, candidate=version)
            if pointer.canary == version:
                self.record(state, "recover", "adopt", f"canary {version} was started before the restart")
                return self._save(state.moved("canary", now, rollout_id=pointer.rollout_id))
            if pointer.active == version:
                self.record(state, "recover", "ended_promote", f"proposal {version} was made active outside the autopilot")
                return self._cool(state, now, "promote")
            if pointer.canary is not None:  # starting ours would replace a canary a person started
                self._note(state, "recover", "wait", f"canary {pointer.canary} runs outside the autopilot: "
                                                     f"proposal {version} starts when it ends")
                return self._save(state)
            # Through ``_note``: a canary that cannot be started fails every tick the same way.
            self._note(state, "recover", "resume", f"proposal {version} written before the restart: starting its canary")
            return self._start(state, now)
        if state.phase in ("watching", "cooldown") and pointer.canary is not None:
            cycle = self.steps.cycle_of(pointer.canary)
            if cycle is not None:
                state = replace(state, cycle_id=cycle, candidate=pointer.canary)
                self.record(state, "recover", "adopt", f"canary {pointer.canary} of cycle {cycle} has no controller")
                return self._save(state.moved("canary", now, rollout_id=pointer.rollout_id))
        return state

    def _show(self, state: AutopilotState, paused: bool) -> None:
        self.metrics.show(state, True, paused)
        midnight = start_of_day(self.clock())
        self.metrics.replay_usd.set(replay_spend_usd(self.db, midnight, shadows=False))
        self.metrics.shadow_usd.set(replay_spend_usd(self.db, midnight, shadows=True))
        savings = self.steps.active_savings()
        if savings is not None:
            self.metrics.savings.set(savings)
