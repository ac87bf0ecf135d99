"""Config sections of the loop: ``rollout:`` (the guard and its shadows) and ``autopilot:`` (rails).

They are part of the one config file (``AppConfig``), so a typo in either is refused at start
with the field's name, like every other section. The autopilot itself lives in ``aperture/``;
only its settings are here, because the config file is the router's contract.

Example (YAML)::

    rollout:
      paired: true
      shadow_fraction: 0.5
      shadow_max_usd_per_day: 2.0
    autopilot:
      enabled: true
      min_new_requests: 120
      max_canary_fraction: 0.5
      freeze_windows: [{days: [sat, sun], start: "00:00", end: "23:59"}]
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RolloutSettings(_Strict):
    """How the guard judges a canary, and the shadows the gateway sends for it."""

    #: Compare quality on pairs: a canary request and its shadow on the active version.
    paired: bool = True
    #: Share of canary-arm requests the gateway re-sends to the active version (0 = none).
    shadow_fraction: float = Field(default=0.0, ge=0.0, le=1.0)
    #: Upstream spend on shadows per UTC day, across the deployment's gateways as each sees it.
    #: With ``paired``, once it cannot pay for a shadow the canary serves nobody until the next UTC day.
    shadow_max_usd_per_day: float = Field(default=1.0, ge=0.0)
    #: Shadows in flight at once per gateway process; above it a chosen shadow is skipped.
    shadow_max_in_flight: int = Field(default=8, ge=1)
    #: The guard's tolerated quality drop (δ) and its error budgets (β; α is fixed at 0.005): a
    #: canary that loses δ or more is promoted with probability at most β. δ is the autopilot's
    #: 1-point tolerance, so a promotion keeps the loop's promise: at δ = 0.03 the regret benchmark
    #: promoted a −1.66 pt proposal, at δ = 0.10 a −2.55 pt one. The price is canary length: an
    #: equal canary needs a median 730 shadowed pairs (p90 2,142) with 2 % slips on each side,
    #: 127 (p90 262) at δ = 0.03; identical answers 315, the emulated worlds' better proposals
    #: 158–301 or more than 400 (docs/benchmarks.md).
    delta: float = Field(default=0.01, gt=0.0, le=0.5)
    beta: float = Field(default=0.10, gt=0.0, lt=0.5)
    error_delta: float = Field(default=0.05, gt=0.0, le=0.5)


class FreezeWindow(_Strict):
    """A weekly UTC window during which the autopilot starts nothing new."""

    days: list[Weekday] = Field(default_factory=lambda: list(_WEEKDAYS))
    start: str = "00:00"
    end: str = "23:59"

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if not _CLOCK.match(value):
            raise ValueError(f"expected HH:MM (24 h, UTC), got {value!r}")
        return value

    def covers(self, moment: datetime) -> bool:
        """True when ``moment`` (naive UTC) falls inside the window (end minute included)."""
        if _WEEKDAYS[moment.weekday()] not in self.days:
            return False
        clock = moment.strftime("%H:%M")
        if self.start <= self.end:
            return self.start <= clock <= self.end
        return clock >= self.start or clock <= self.end  # wraps past midnight


class AutopilotSettings(_Strict):
    """Rails of ``aperture autopilot``: when it may search, what it may try, what it may spend."""

    enabled: bool = False
    #: Propose and record, but never start a canary.
    dry_run: bool = False
    #: Seconds between two ticks of the controller.
    interval_s: float = Field(default=15.0, gt=0.0)
    #: The gateway replays go through (its rules, its spans), and the key they use.
    gateway_url: str = "http://127.0.0.1:8080"
    api_key: str = "autopilot"
    # -- when to search ------------------------------------------------------------------------
    #: New scored user requests since the last search that justify a new one.
    min_new_requests: int = Field(default=200, ge=1)
    #: Also search when the mean cost per request moved by this share since the last search.
    cost_drift: float = Field(default=0.25, gt=0.0)
    #: Also search when a failure cluster grew by at least this many requests.
    cluster_growth: int = Field(default=10, ge=1)
    #: Search at least this often (seconds) when there is any new traffic; none = no schedule.
    schedule_s: float | None = Field(default=None, gt=0.0)
    #: The smallest number of scored requests a search may start from.
    min_evidence: int = Field(default=60, ge=1)
    # -- what to search ------------------------------------------------------------------------
    #: Models the autopilot may route to (empty: every model in the catalog).
    allowed_models: list[str] = Field(default_factory=list)
    #: Routes replayed to learn their quality ("model:detail"; empty: every candidate route).
    replay_routes: list[str] = Field(default_factory=list)
    replay_sample: int = Field(default=48, ge=1)
    #: The route a proposal's rules fall back to when their own target fails ("model:detail").
    fallback_route: str | None = None
    trials: int = Field(default=150, ge=1)
    #: The quality drop (0-1) a proposal may have against the baseline on the logged traffic.
    tolerance: float = Field(default=0.01, ge=0.0, le=0.5)
    #: A proposal must predict at least this saving to be worth a canary.
    min_savings: float = Field(default=0.05, ge=0.0, lt=1.0)
    seed: int = 0
    # -- the canary ----------------------------------------------------------------------------
    canary_fraction: float = Field(default=0.25, gt=0.0, le=1.0)
    max_canary_fraction: float = Field(default=0.5, gt=0.0, le=1.0)
    #: Canary-arm requests after which an undecided canary is rolled back (no evidence, no risk).
    #: Sized for the guard's default δ (``rollout.delta``): above the p90 of an equal canary's
    #: pairs when every canary request is shadowed (``rollout.shadow_fraction`` 1.0).
    max_canary_requests: int = Field(default=2500, ge=1)
    #: Seconds after which an undecided canary is rolled back however few requests it served
    #: (null: no limit). A canary whose shadows cannot be paid serves nobody until the next UTC
    #: day (``router.shadow``), so without it a small shadow cap can hold a canary day after day,
    #: and a quiet deployment can take weeks to reach ``max_canary_requests``. A week by default:
    #: longer than any canary the guard decides at the traffic it is sized for.
    max_canary_s: float | None = Field(default=7 * 24 * 3600.0, gt=0.0)
    #: Seconds to wait after a promotion, rollback or fruitless search before the next search.
    cooldown_s: float = Field(default=600.0, ge=0.0)
    # -- money and time ------------------------------------------------------------------------
    max_replay_usd_per_day: float = Field(default=1.0, ge=0.0)
    freeze_windows: list[FreezeWindow] = Field(default_factory=list)
    # -- reporting -----------------------------------------------------------------------------
    webhook_url: str | None = None
    webhook_timeout_s: float = Field(default=5.0, gt=0.0)
    #: A controller holds the deployment's lease for this long and renews it every tick.
    lease_ttl_s: float = Field(default=120.0, gt=0.0)

    @model_validator(mode="after")
    def _fractions(self) -> AutopilotSettings:
        if self.canary_fraction > self.max_canary_fraction:
            raise ValueError(
                f"canary_fraction ({self.canary_fraction}) is above max_canary_fraction ({self.max_canary_fraction})"
            )
        if self.lease_ttl_s <= self.interval_s:
            raise ValueError(f"lease_ttl_s ({self.lease_ttl_s}) must exceed interval_s ({self.interval_s})")
        return self

    @field_validator("replay_routes")
    @classmethod
    def _routes(cls, value: list[str]) -> list[str]:
        for route in value:
            _route(route)
        return value

    @field_validator("fallback_route")
    @classmethod
    def _fallback(cls, value: str | None) -> str | None:
        if value is not None:
            _route(value)
        return value

    def frozen_at(self, moment: datetime) -> FreezeWindow | None:
        return next((w for w in self.freeze_windows if w.covers(moment)), None)


def _route(route: str) -> None:
    model, _, detail = route.partition(":")
    if not model or not detail:
        raise ValueError(f"a route is 'model:detail', got {route!r}")


def pairing_gap(rollout: RolloutSettings) -> str | None:
    """Why ``rollout.paired`` cannot be served by this config, or None when it can."""
    if not rollout.paired:
        return None
    if rollout.shadow_fraction <= 0:
        return ("rollout.paired compares each canary request with its shadow on the active version, but "
                "rollout.shadow_fraction is 0, so no shadow is sent: set rollout.shadow_fraction (1.0 shadows "
                "every canary request) or rollout.paired: false")
    if rollout.shadow_max_usd_per_day <= 0:
        return ("rollout.paired compares each canary request with its shadow on the active version, but "
                "rollout.shadow_max_usd_per_day is 0, so no shadow can be paid for: give shadows a daily cap "
                "or set rollout.paired: false")
    return None


def pairs(rollout: RolloutSettings) -> bool:
    """Whether the guard compares pairs (canary request and its shadow) rather than the two arms."""
    return rollout.paired and pairing_gap(rollout) is None


def promise_gap(rollout: RolloutSettings, autopilot: AutopilotSettings) -> str | None:
    """Why a promotion may break the autopilot's tolerance, or None when it cannot (beyond β).

    The optimizer proposes rules predicted to lose at most ``autopilot.tolerance``; the guard
    only rules out losses of ``rollout.delta`` or more. A δ above the tolerance is a valid choice
    (shorter canaries), but then a proposal losing between the two may be promoted.
    """
    if rollout.delta <= autopilot.tolerance:
        return None
    return (f"rollout.delta ({rollout.delta:g}) is above autopilot.tolerance ({autopilot.tolerance:g}): "
            f"the guard may promote a proposal that loses up to {rollout.delta * 100:g} points of quality")


#: Below this δ the two-arm test (``rollout.paired: false``) needs thousands of canary requests.
#: ``benchmarks.sequential --delta D --beta 0.10`` (two arms, canary fraction 0.1): an equal canary
#: took a median 156 (OCR-like scores) to 526 (pass/fail) canary requests at δ = 0.03, and 1,388
#: to more than 3,000 at δ = 0.01, where two thirds of the pass/fail runs were still undecided
#: at 3,000 (docs/rollout.md).
TWO_ARM_MIN_DELTA = 0.03


def two_arm_gap(rollout: RolloutSettings, autopilot: AutopilotSettings) -> str | None:
    """Why a two-arm guard will mostly end undecided at this δ, or None when it will not.

    Pairs cancel each image's difficulty; two arms do not, so at a 1-point δ their test runs
    past ``autopilot.max_canary_requests`` for most canaries, which are then rolled back with
    nothing proven. A valid choice where shadows are not wanted, but one to be told about.
    """
    if rollout.paired or rollout.delta >= TWO_ARM_MIN_DELTA:
        return None
    return (f"rollout.paired is false at rollout.delta {rollout.delta:g}: the two-arm test needs thousands of "
            f"canary requests to decide at a δ below {TWO_ARM_MIN_DELTA:g} (docs/rollout.md), so with "
            f"autopilot.max_canary_requests {autopilot.max_canary_requests} most canaries will be rolled back "
            "undecided; pairs (rollout.paired with rollout.shadow_fraction above 0) decide in hundreds")
