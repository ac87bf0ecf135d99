"""The guard: reads canary and active outcomes from the trace store, decides, acts, records.

One :meth:`Guard.step` opens the DuckDB file, takes every live request routed since the
canary started (canary arm on the canary version, active arm on the active version), joins
the configured evaluators' scores, the error status and the per-image cost, runs the
sequential test (:mod:`router.rollout.sequential`), promotes or rolls back through the rule
store (compare-and-set on the pointer's generation), and writes the decision with its
numbers to ``rollouts``. Nothing new since the last recorded decision → nothing recorded.

    guard = Guard("aperture.duckdb", store, GuardConfig(evaluators=("ocr_faithfulness",)))
    guard.run(interval_s=30, stop_event=threading.Event())
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from opentelemetry import trace
from opentelemetry.trace import TracerProvider

from collector import semconv as sc
from collector.queries.guard import (
    GuardWindow,
    RolloutRecord,
    arm_costs,
    arm_scores,
    paired_scores,
    record_rollout,
    recorded_decision,
    window_requests,
)
from collector.store import open_store
from router.rollout.base import Pointer, RolloutConflict, RuleStore
from router.rollout.sequential import (
    Decision,
    MetricResult,
    SequentialConfig,
    cost_check,
    decide,
    evaluate_metric,
    evaluate_paired_metric,
)
from router.rollout.settings import RolloutSettings, pairs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GuardConfig:
    """``evaluators``: eval_scores.evaluator names to guard on. By default they are pooled into
    one ``quality`` metric (a request's score is the mean of its configured evaluators'
    scores; each task usually has one evaluator); ``per_evaluator`` tests each one on its own
    (α is split among them, evaluators without any observation are skipped). ``score_field``:
    ``score`` (0–1) or ``passed`` (pass/fail); errors use their own tolerated drop.

    ``paired``: quality is tested on pairs instead of two independent arms: each canary request
    next to a *shadow* of it on the active version — a replay (``x-aperture-replay: 1``, which
    the gateway always routes by the active version) of the same image hash and task sent after
    it. Image difficulty cancels out of the difference, so the test decides with far fewer
    canary requests; canary requests without a scored shadow are not counted. Shadows are replays
    on the active arm: a replay to a named route (arm ``explicit``) never is one. Errors and cost
    are still compared between the live arms: an error may have no shadow to pair with."""

    evaluators: tuple[str, ...] = ()
    per_evaluator: bool = False
    score_field: Literal["score", "passed"] = "score"
    include_errors: bool = True
    error_delta: float = 0.03
    include_cost: bool = True
    include_replay: bool = False
    paired: bool = False
    act: bool = True
    sequential: SequentialConfig = field(default_factory=SequentialConfig)


def guard_config(rollout: RolloutSettings, evaluators: tuple[str, ...]) -> GuardConfig:
    """The guard a config's ``rollout:`` section describes, on the given evaluators.

    Pairs need shadows: with ``shadow_fraction`` 0, or no money for shadows, the gateway sends
    none, no canary request would ever be paired and the guard would wait forever, so the arms
    are compared instead (``rollout.paired`` is then a wish the config cannot serve;
    :func:`router.rollout.settings.pairing_gap` says so).
    """
    return GuardConfig(evaluators=evaluators, error_delta=rollout.error_delta, paired=pairs(rollout),
                       sequential=SequentialConfig(delta=rollout.delta, beta=rollout.beta))


def rollout_record(
    pointer: Pointer,
    decision: str,
    reason: str,
    statistics: dict[str, Any] | None = None,
    *,
    n_canary: int = 0,
    n_active: int = 0,
    candidate: str | None = None,
) -> RolloutRecord:
    """The ``rollouts`` row for a decision taken on ``pointer`` (the state before acting);
    :func:`collector.queries.guard.record_rollout` writes it."""
    return RolloutRecord(
        rollout_id=pointer.rollout_id,
        candidate_version=candidate or pointer.canary,
        active_version=pointer.active,
        decision=decision,
        fraction=pointer.canary_fraction,
        reason=reason,
        statistics=statistics or {},
        n_canary=n_canary,
        n_active=n_active,
    )


class Guard:
    def __init__(
        self,
        db_path: str | Path,
        store: RuleStore,
        config: GuardConfig | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        actor: str = "guard",
    ) -> None:
        self.db_path = db_path
        self.store = store
        self.config = config or GuardConfig()
        self.actor = actor
        self._tracer = (tracer_provider.get_tracer("aperture.rollout") if tracer_provider
                        else trace.get_tracer("aperture.rollout"))
        self._lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------------
    def _load(self, conn: Any, p: Pointer) -> dict[str, Any]:
        window = GuardWindow(p.canary_started_at or p.updated_at, p.canary, p.active,
                             self.config.include_replay)
        data: dict[str, Any] = {"requests": window_requests(conn, window), "scores": {}}
        groups = ([(name, (name,)) for name in self.config.evaluators] if self.config.per_evaluator
                  else [("quality", self.config.evaluators)] if self.config.evaluators else [])
        scores = paired_scores if self.config.paired else arm_scores
        for metric, names in groups:
            data["scores"][metric] = scores(conn, window, names, self.config.score_field)
        if self.config.include_cost:
            data["cost"] = arm_costs(conn, window)
        return data

    @staticmethod
    def _fingerprint(p: Pointer, data: dict[str, Any]) -> str:
        parts: list[Any] = [p.rollout_id, p.generation, len(data["requests"]["span_id"]),
                            int(np.sum(data["requests"]["failed"]))]
        for name, s in sorted(data["scores"].items()):
            parts += [name, len(s["v"]), float(np.sum(s["v"]))]
        if "cost" in data:
            parts.append(len(data["cost"]["cost_usd"]))
        if len(data["requests"]["ts"]):
            parts.append(str(data["requests"]["ts"][-1]))
        return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]

    def evaluate(self, data: dict[str, Any]) -> Decision:
        """The decision for loaded data (pure apart from logging)."""
        cfg = self.config.sequential
        scores = dict(data["scores"])
        if self.config.per_evaluator and any(len(s["v"]) for s in scores.values()):
            # An evaluator that sees none of this traffic (another task) must not block promotion.
            scores = {name: s for name, s in scores.items() if len(s["v"])}
        # Configured evaluators without any score yet stay in: quality is never waived.
        k = len(scores) + int(self.config.include_errors)
        alpha = cfg.alpha / max(k, 1)
        results: dict[str, MetricResult] = {}
        for name, s in scores.items():
            if self.config.paired:
                results[name] = evaluate_paired_metric(name, s["v"], s["shadow"], cfg, alpha)
            else:
                results[name] = evaluate_metric(name, s["is_canary"], s["v"], cfg, alpha)
        if self.config.include_errors:
            req = data["requests"]
            ecfg = replace(cfg, delta=self.config.error_delta,
                           margin=min(cfg.margin, self.config.error_delta / 2))
            ok = 1.0 - np.asarray(req["failed"], dtype=np.float64)
            results["success_rate"] = evaluate_metric("success_rate", req["is_canary"], ok, ecfg, alpha)
        cost = None
        if "cost" in data:
            c = data["cost"]
            arm = np.asarray(c["is_canary"], dtype=bool)
            cost_usd = np.asarray(c["cost_usd"], dtype=np.float64)
            cost = cost_check(cost_usd[arm], cost_usd[~arm], cfg)
        return decide(results, cfg, cost)

    def preview(self) -> Decision:
        """What the guard would decide now, without acting or recording (read-only open)."""
        p = self.store.pointer()
        if p.canary is None or p.active is None:
            return Decision("idle", {}, "no canary running")
        with open_store(self.db_path, read_only=True) as conn:
            data = self._load(conn, p)
        return self.evaluate(data)

    # -- acting ----------------------------------------------------------------------------
    def step(self) -> Decision:
        """One evaluation; acts on promote/rollback and records the decision once."""
        with self._lock:
            p = self.store.pointer()
            if p.canary is None or p.active is None:
                return Decision("idle", {}, "no canary running")
            with open_store(self.db_path) as conn:
                data = self._load(conn, p)
                fingerprint = self._fingerprint(p, data)
                last = recorded_decision(conn, p.rollout_id, fingerprint)
            if last is not None:
                return Decision(last[0], last[2], last[1])  # type: ignore[arg-type]
            decision = self.evaluate(data)
            req = data["requests"]
            n_canary = int(np.sum(req["is_canary"]))
            stats = {**decision.statistics, "fingerprint": fingerprint,
                     "n_canary": n_canary, "n_active": len(req["is_canary"]) - n_canary}
            decision = Decision(decision.action, stats, decision.reason)
            if decision.action in ("promote", "rollback") and self.config.act:
                try:
                    if decision.action == "promote":
                        self.store.promote(actor=self.actor, reason=decision.reason,
                                           expect_generation=p.generation)
                    else:
                        self.store.rollback(actor=self.actor, reason=decision.reason,
                                            expect_generation=p.generation)
                except RolloutConflict as exc:
                    log.warning("guard decision %s not applied: %s", decision.action, exc.message)
                    return Decision("idle", stats, f"pointer changed meanwhile: {exc.message}")
            record_rollout(self.db_path, rollout_record(p, decision.action, decision.reason, stats,
                                                        n_canary=n_canary, n_active=stats["n_active"]))
            self._emit(p, decision)
            log.info("rollout %s: %s (%s)", p.rollout_id, decision.action, decision.reason)
            return decision

    def _emit(self, p: Pointer, decision: Decision) -> None:
        with self._tracer.start_as_current_span(sc.ROLLOUT_GUARD_SPAN_NAME) as span:
            attrs: dict[str, Any] = {
                sc.APERTURE_ROLLOUT_ID: p.rollout_id or "",
                sc.APERTURE_ROLLOUT_ACTION: decision.action,
                sc.APERTURE_ROLLOUT_REASON: decision.reason,
                sc.APERTURE_ROLLOUT_CANDIDATE_VERSION: p.canary or "",
                sc.APERTURE_ROLLOUT_ACTIVE_VERSION: p.active or "",
                sc.APERTURE_ROLLOUT_FRACTION: p.canary_fraction,
                sc.APERTURE_ROLLOUT_N_CANARY: int(decision.statistics.get("n_canary", 0)),
                sc.APERTURE_ROLLOUT_N_ACTIVE: int(decision.statistics.get("n_active", 0)),
                sc.APERTURE_ROLLOUT_STATISTICS: json.dumps(decision.statistics, default=str),
            }
            for name, m in decision.statistics.get("metrics", {}).items():
                for key in ("e_rollback", "e_promote", "mean_canary", "mean_active"):
                    if m.get(key) is not None:
                        attrs[sc.rollout_metric_key(name, key)] = float(m[key])
            span.add_event(sc.ROLLOUT_DECISION_EVENT, attrs)

    def run(self, interval_s: float, stop_event: threading.Event) -> None:
        """Step every ``interval_s`` until ``stop_event`` is set; errors are logged, not fatal."""
        while not stop_event.is_set():
            try:
                self.step()
            except Exception:
                log.exception("guard step failed")
            stop_event.wait(interval_s)


__all__ = ["Guard", "GuardConfig", "rollout_record"]
