"""Prometheus metrics of the controller, on their own registry (``--metrics-port`` serves them)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from aperture.autopilot.state import PHASES, AutopilotState


class AutopilotMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.cycles = Counter("aperture_autopilot_cycles", "Finished autopilot cycles by outcome",
                              ["outcome"], registry=self.registry)
        self.state = Gauge("aperture_autopilot_state", "1 for the controller's current phase",
                           ["phase"], registry=self.registry)
        self.paused = Gauge("aperture_autopilot_paused", "1 while paused", registry=self.registry)
        self.leader = Gauge("aperture_autopilot_leader", "1 while this instance holds the lease",
                            registry=self.registry)
        self.replay_usd = Gauge("aperture_autopilot_replay_spend_usd", "Replay spend today (UTC), USD",
                                registry=self.registry)
        self.shadow_usd = Gauge("aperture_autopilot_shadow_spend_usd", "Gateway shadow spend today (UTC), USD",
                                registry=self.registry)
        self.savings = Gauge("aperture_autopilot_active_savings_ratio",
                             "Predicted saving of the active version against the one it replaced",
                             registry=self.registry)

    def show(self, state: AutopilotState, leader: bool, paused: bool) -> None:
        for phase in PHASES:
            self.state.labels(phase=phase).set(1.0 if phase == state.phase else 0.0)
        self.paused.set(1.0 if paused else 0.0)
        self.leader.set(1.0 if leader else 0.0)
