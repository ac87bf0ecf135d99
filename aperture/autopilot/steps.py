"""The loop's heavy steps as the autopilot runs them: score, replay, optimize, propose, guard.

``LoopSteps`` is what the controller needs; ``StoreLoopSteps`` does it for real against the
trace store, the rule store and a gateway. Keeping the controller on this small surface lets
its state machine be tested with a recorded fake, while the end-to-end tests run these steps.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from collector.queries.autopilot import replay_requests_since, replay_spend_usd, traffic_since
from collector.semconv import QUALITY_EVALUATORS, utc_now
from router.config import AppConfig
from router.rollout.base import Pointer, RuleStore
from router.rollout.settings import AutopilotSettings

log = logging.getLogger("aperture.autopilot")

#: A replay chunk: items sent together between two spend checks.
REPLAY_CHUNK = 4


@dataclass(frozen=True)
class SearchOutcome:
    """What a search produced: a proposal worth a canary, or the reason there is none."""

    proposal: Any | None  # optimizer.run.Proposal
    reason: str
    replayed: int = 0
    replay_usd_estimate: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GuardVerdict:
    action: str  # promote | rollback | extend | hold
    reason: str
    n_canary: int = 0


class LoopSteps(Protocol):
    def score(self) -> int: ...
    def search(self, settings: AutopilotSettings, cycle_id: str) -> SearchOutcome: ...
    def propose(self, proposal: Any, cycle_id: str) -> str: ...
    def find_proposal(self, cycle_id: str) -> str | None: ...
    def cycle_of(self, version_id: str) -> str | None: ...
    def active_savings(self) -> float | None: ...
    def start_canary(self, version_id: str, fraction: float) -> Pointer: ...
    def guard(self) -> GuardVerdict: ...
    def rollback(self, reason: str) -> Pointer: ...
    def pointer(self) -> Pointer: ...


class StoreLoopSteps:
    """The real steps. ``replay_send`` is injectable (tests); by default it posts to the gateway."""

    def __init__(
        self,
        config: AppConfig,
        db: Path,
        store: RuleStore,
        *,
        blob_dir: Path,
        workdir: Path,
        validate: Callable[[str], list[str]] | None = None,
        tracer_provider: Any = None,
        optuna_path: Path | None = None,
    ) -> None:
        self.config = config
        self.optuna_path = optuna_path or workdir / "optuna.db"
        self.db = db
        self.store = store
        self.blob_dir = blob_dir
        self.workdir = workdir
        self.validate = validate
        self.tracer_provider = tracer_provider
        self._guard: Any = None
        #: The optimizer's last proposal (the demo's report reads it).
        self.last_proposal: Any = None

    # -- scoring -------------------------------------------------------------------------------
    def score(self) -> int:
        from evals.clusters import find_failure_clusters, write_clusters
        from evals.runner import run_evals

        summary = run_evals(self.db, workers=2, progress=False, blob_dir=self.blob_dir,
                            tracer_provider=self.tracer_provider)
        if summary.cases:
            write_clusters(self.db, find_failure_clusters(self.db))
        return int(summary.cases)

    # -- searching -----------------------------------------------------------------------------
    def _routes(self, settings: AutopilotSettings) -> list[Any]:
        from optimizer.routes import Route, candidate_routes

        routes = candidate_routes(self.config.models, settings.allowed_models or None)
        if settings.replay_routes:
            wanted = set(settings.replay_routes)
            routes = [r for r in routes if r.key in wanted]
            routes += [Route(*k.split(":", 1)) for k in settings.replay_routes if k not in {r.key for r in routes}]
        return routes

    def _replay(self, settings: AutopilotSettings) -> tuple[int, float, str]:
        """Replay a stratified sample in chunks while the day's replay budget lasts."""
        from optimizer.replay import ReplayError, load_items, replay

        left = settings.max_replay_usd_per_day - replay_spend_usd(self.db, start_of_day(utc_now()), shadows=False)
        if left <= 0:
            return 0, 0.0, f"replay budget for today spent ({settings.max_replay_usd_per_day:.2f} USD)"
        try:
            items = load_items(self.db, self.blob_dir, settings.replay_sample, seed=settings.seed)
        except ReplayError as exc:
            return 0, 0.0, f"nothing to replay: {exc}"
        routes = self._routes(settings)
        # Until the first chunk is billed, a replay is priced like the mean user request; after
        # it, like the replays already sent. Spans reach the store a second or so after the
        # answer, so this estimate, not the store, is what keeps a chunk inside the cap.
        per_request = traffic_since(self.db, None).mean_cost_usd or 0.0
        sent, spent, started = 0, 0.0, utc_now()
        for start in range(0, len(items), REPLAY_CHUNK):
            chunk = items[start : start + REPLAY_CHUNK]
            requests = sum(1 for i in chunk for r in routes if r.key != i.route)
            if spent + requests * per_request > left:
                return sent, spent, f"replay stopped at the day's cap ({settings.max_replay_usd_per_day:.2f} USD)"
            summary = replay(self.config.autopilot.gateway_url, chunk, routes,
                             api_key=settings.api_key, concurrency=2)
            sent += summary.sent
            spent += requests * per_request
        self._await_spans(started, sent)
        return sent, spent, f"replayed {sent} requests on {len(routes)} routes"

    def _await_spans(self, since: Any, sent: int, timeout_s: float = 60.0) -> None:
        """Spans reach the store a moment after their answers (an exporter batch, a collector
        write): score and optimize only once the replays are there, or the timeout passed."""
        deadline = time.monotonic() + timeout_s
        while replay_requests_since(self.db, since) < sent and time.monotonic() < deadline:
            time.sleep(0.5)

    def search(self, settings: AutopilotSettings, cycle_id: str) -> SearchOutcome:
        from optimizer.run import OptimizerError, OptimizeSettings, optimize

        replayed, usd, replay_reason = self._replay(settings)
        if replayed:
            self.score()
        active = self.store.pointer().active
        try:
            proposal = optimize(self.db, self.config.models, OptimizeSettings(
                tolerance=settings.tolerance, trials=settings.trials, seed=settings.seed,
                storage=f"sqlite:///{self.optuna_path}", study_name=f"autopilot-{cycle_id}",
                models=settings.allowed_models or None, fallback=fallback_target(settings.fallback_route),
            ), plot_path=self.workdir / f"pareto-{cycle_id}.png")
        except OptimizerError as exc:
            return SearchOutcome(None, f"optimizer refused: {exc}; {replay_reason}", replayed, usd)
        self.last_proposal = proposal
        details = {"savings": proposal.savings, "predicted_quality": proposal.predicted_quality,
                   "baseline_quality": proposal.baseline_quality, "active": active}
        if proposal.savings < settings.min_savings:
            return SearchOutcome(None, f"best rules save {proposal.savings:.1%}, below min_savings "
                                       f"{settings.min_savings:.0%}; {replay_reason}", replayed, usd, details)
        return SearchOutcome(proposal, f"rules saving {proposal.savings:.1%} at "
                                       f"{(proposal.predicted_quality - proposal.baseline_quality) * 100:+.1f} "
                                       f"quality points; {replay_reason}", replayed, usd, details)

    # -- proposing and the canary --------------------------------------------------------------
    def propose(self, proposal: Any, cycle_id: str) -> str:
        version = self.store.propose(
            proposal.text, author="autopilot", note=f"autopilot cycle {cycle_id}",
            provenance={**proposal.provenance, "autopilot_cycle": cycle_id}, validate=self.validate,
        )
        return version.id

    def find_proposal(self, cycle_id: str) -> str | None:
        for version in reversed(self.store.list()):
            if (version.provenance or {}).get("autopilot_cycle") == cycle_id:
                return version.id
        return None

    def cycle_of(self, version_id: str) -> str | None:
        """The autopilot cycle that proposed ``version_id`` (None for a version a person wrote)."""
        version, _ = self.store.get(version_id)
        cycle = (version.provenance or {}).get("autopilot_cycle")
        return str(cycle) if cycle else None

    def active_savings(self) -> float | None:
        """The saving the active version's proposal predicted, when an optimizer wrote it."""
        active = self.store.pointer().active
        if active is None:
            return None
        version, _ = self.store.get(active)
        made = version.provenance or {}
        predicted, baseline = made.get("predicted_cost_per_request_usd"), made.get("baseline_cost_per_request_usd")
        if not isinstance(predicted, int | float) or not isinstance(baseline, int | float) or baseline <= 0:
            return None
        return 1.0 - float(predicted) / float(baseline)

    def start_canary(self, version_id: str, fraction: float) -> Pointer:
        from router.rollout import actions

        return actions.start_canary(self.store, version_id, fraction, db_path=self.db, actor="autopilot",
                                    reason="autopilot: proposal within the rails")

    def _guard_instance(self) -> Any:
        from router.rollout.guard import Guard, guard_config

        if self._guard is None:
            config = guard_config(self.config.rollout, tuple(sorted(set(QUALITY_EVALUATORS.values()))))
            self._guard = Guard(self.db, self.store, config, tracer_provider=self.tracer_provider, actor="autopilot")
        return self._guard

    def guard(self) -> GuardVerdict:
        guard = self._guard_instance()
        decision = guard.step()
        stats = decision.statistics or {}
        reason = decision.reason
        if decision.action not in ("promote", "rollback") and guard.config.paired:
            reason += f"; {self._shadow_spend()}"
        return GuardVerdict(decision.action, reason, int(stats.get("n_canary", 0) or 0))

    def _shadow_spend(self) -> str:
        """Today's shadow spend in the store (every gateway's) beside each gateway's cap: a gateway
        whose cap can no longer pay for a shadow stops serving the canary until 00:00 UTC
        (``router.shadow``), which is why pairs may stop growing while the canary runs."""
        spent = replay_spend_usd(self.db, start_of_day(utc_now()), shadows=True)
        cap = self.config.rollout.shadow_max_usd_per_day
        return f"shadows today: {spent:.2f} USD across the gateways, cap {cap:.2f} USD per gateway"

    def rollback(self, reason: str) -> Pointer:
        from router.rollout import actions

        return actions.manual_rollback(self.store, db_path=self.db, actor="autopilot", reason=reason)

    def pointer(self) -> Pointer:
        return self.store.pointer()


def start_of_day(now: datetime) -> datetime:
    """The start of ``now``'s UTC day: where the daily replay and shadow caps begin."""
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def fallback_target(route: str | None) -> Any:
    """``"model:detail"`` as the proposal's fallback target (None: the optimizer's default)."""
    if not route:
        return None
    from optimizer.routes import Route

    model, _, detail = route.partition(":")
    return Route(model, detail).target()
