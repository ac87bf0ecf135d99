"""The controller's durable state: which step of which cycle it is in, and whether it is paused.

Written atomically (readers see the old or the new file) before and after every step, so a
controller killed anywhere finds, on restart, the last step it started and can resume it or
abandon it cleanly (see ``Autopilot.recover``).

States::

    watching ──search──► searching ──proposal──► proposing ──► canary ──decision──► cooldown
        ▲                    │ (nothing better / refused)                                │
        └────────────────────┴────────────────────── cooldown over ◄─────────────────────┘
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from router.rollout.store import replace_atomically

Phase = Literal["watching", "searching", "proposing", "canary", "cooldown"]
PHASES: tuple[Phase, ...] = ("watching", "searching", "proposing", "canary", "cooldown")


@dataclass(frozen=True)
class Baseline:
    """What the traffic looked like when the last search started (the triggers compare to it)."""

    at: datetime | None = None
    mean_cost_usd: float | None = None
    clusters: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AutopilotState:
    phase: Phase = "watching"
    cycle_id: str | None = None
    #: The proposed version of this cycle (set once ``proposing`` wrote it).
    candidate: str | None = None
    #: The rollout the canary of this cycle runs as.
    rollout_id: str | None = None
    phase_since: datetime | None = None
    cooldown_until: datetime | None = None
    last_search: Baseline = field(default_factory=Baseline)
    cycles: int = 0
    last_outcome: str | None = None

    def moved(self, phase: Phase, now: datetime, **changes: Any) -> AutopilotState:
        return replace(self, phase=phase, phase_since=now, **changes)


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _when(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def to_json(state: AutopilotState) -> str:
    return json.dumps(_encode(asdict(state)), indent=2, sort_keys=True)


def from_json(text: str) -> AutopilotState:
    data = json.loads(text)
    base = data.get("last_search") or {}
    phase = data.get("phase", "watching")
    if phase not in PHASES:
        raise ValueError(f"unknown autopilot phase {phase!r}")
    return AutopilotState(
        phase=phase, cycle_id=data.get("cycle_id"),
        candidate=data.get("candidate"), rollout_id=data.get("rollout_id"),
        phase_since=_when(data.get("phase_since")), cooldown_until=_when(data.get("cooldown_until")),
        last_search=Baseline(_when(base.get("at")), base.get("mean_cost_usd"), dict(base.get("clusters") or {})),
        cycles=int(data.get("cycles", 0)), last_outcome=data.get("last_outcome"),
    )


class StateFile:
    """``<rule store>/autopilot/state.json``, and the pause flag beside it.

    The flag is its own file so that ``aperture autopilot pause`` never races the controller's
    own writes of the state.
    """

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "state.json"
        self.pause_path = folder / "paused"

    def paused(self) -> str | None:
        """The reason given to ``pause``, or None when running."""
        try:
            return self.pause_path.read_text() or "paused"
        except FileNotFoundError:
            return None

    def pause(self, reason: str) -> None:
        replace_atomically(self.pause_path, (reason or "paused").encode())

    def resume(self) -> bool:
        existed = self.pause_path.exists()
        self.pause_path.unlink(missing_ok=True)
        return existed

    def load(self) -> AutopilotState:
        try:
            return from_json(self.path.read_text())
        except FileNotFoundError:
            return AutopilotState()

    def save(self, state: AutopilotState) -> None:
        replace_atomically(self.path, to_json(state).encode())
