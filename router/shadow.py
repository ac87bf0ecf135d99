"""Shadows the gateway sends while a canary runs: a canary request re-sent on the active version.

The paired guard compares a canary's answer with the active version's answer *on the same
image*. Outside the demo nobody sends those pairs, so the gateway does:

* **chosen before the answer**: ``chosen`` hashes the request id alone (salted apart from the
  arm split), so whether a request is shadowed cannot depend on how it went;
* **off the request path**: the shadow is a background task started after the client's
  request was admitted; the client's latency and answer do not wait for it;
* **never traffic, never the client's money**: shadows are tagged replay + shadow, skip rate
  limits and budgets, and spend from their own daily cap (``ShadowBudget``);
* **bounded**: at most ``max_in_flight`` at once per process; above it a shadow is skipped and
  counted, never queued without bound;
* **no money for a pair, no canary**: with the paired guard, a canary-arm request picked for a
  shadow the day's cap can no longer pay for is routed on the active version instead
  (``ShadowSender.admits``). A canary the guard cannot judge then serves nobody, rather than
  spending ``max_canary_requests`` on requests that prove nothing; it resumes when the day's
  cap does.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime

from collector.semconv import utc_now

log = logging.getLogger("aperture.shadow")

_SALT = b"aperture-shadow:"


def chosen(request_id: str, fraction: float) -> bool:
    """Whether this request is shadowed: a pure function of its id, independent of the arm hash."""
    if fraction <= 0.0:
        return False
    if fraction >= 1.0:
        return True
    digest = hashlib.sha256(_SALT + request_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


@dataclass
class ShadowBudget:
    """USD a process may spend on shadows per UTC day, reserved before a shadow is sent.

    ``reserve`` hands out at most what is left (capped at ``per_shadow``); the shadow is sent
    with that amount as its request cost cap, so the gateway refuses, before anything leaves,
    a shadow that would cost more. ``settle`` replaces the reservation with the estimate the
    gateway priced. The cap therefore holds however many shadows run at once.
    """

    cap_usd: float
    clock: Callable[[], datetime] = utc_now
    day: date | None = None
    spent_usd: float = 0.0
    reserved_usd: float = 0.0

    def _roll(self) -> None:
        today = self.clock().date()
        if today != self.day:
            self.day, self.spent_usd = today, 0.0

    def left(self) -> float:
        self._roll()
        return max(0.0, self.cap_usd - self.spent_usd - self.reserved_usd)

    def reserve(self, per_shadow: float) -> float:
        """Reserve up to ``per_shadow`` USD; 0.0 means the day's cap is reached."""
        amount = min(per_shadow, self.left())
        self.reserved_usd += amount
        return amount

    def settle(self, reserved: float, spent: float) -> None:
        self._roll()
        self.reserved_usd = max(0.0, self.reserved_usd - reserved)
        self.spent_usd += max(0.0, spent)


@dataclass
class ShadowStats:
    sent: int = 0
    skipped_busy: int = 0
    skipped_budget: int = 0
    failed: int = 0
    #: Canary-arm requests served by the active version because the day's cap could not pay their shadow.
    diverted: int = 0
    spent_usd: float = 0.0


@dataclass
class ShadowSender:
    """Runs shadows as background tasks. ``run`` is the gateway's own shadow entry point: it
    takes the USD cap for this shadow and returns the estimated cost it was priced at."""

    budget: ShadowBudget
    max_in_flight: int = 8
    stats: ShadowStats = field(default_factory=ShadowStats)
    #: Told each outcome ("sent", "skipped_busy", "skipped_budget", "failed", "diverted") and its cost.
    on_outcome: Callable[[str, float], None] | None = None
    #: What the latest shadows were priced at (sent or refused for their cap), newest last.
    recent_estimates: deque[float] = field(default_factory=lambda: deque(maxlen=16))
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def priced(self, estimate_usd: float) -> None:
        """Note what a shadow was priced at, before its cap is checked."""
        self.recent_estimates.append(estimate_usd)

    def per_shadow_usd(self) -> float:
        """The cap a shadow started now is sent with: its slot's share of what is left today."""
        return self.budget.left() / self.max_in_flight

    def admits(self) -> bool:
        """Whether the day's cap can still pay for a shadow started now: a slot's share of what is
        left covers the cheapest of the latest shadows' prices (any money will do before the
        first). Checked when the arm is chosen, before the request is priced, so it is a
        forecast; ``submit`` still decides.

        Only money is forecast. A shadow skipped because every slot is busy leaves its canary
        request unpaired, as before: slots fill when the upstream is slow or failing, and turning
        the canary off exactly then would move those errors onto the active arm of the guard's
        error comparison. The cheapest recent price, not the latest, so one dear image cannot
        hold the canary. And when not even a whole day's share could pay for such a shadow,
        pairs are out of reach whatever the hour: the canary then serves as configured, and
        ``autopilot.max_canary_requests`` ends it, rather than serving nobody for ever.
        """
        price = min(self.recent_estimates, default=0.0)
        if self.budget.cap_usd / self.max_in_flight < price:
            return True
        share = self.per_shadow_usd()
        return share > 0.0 and share >= price

    def divert(self) -> None:
        """Count a canary-arm request sent to the active version because ``admits`` said no."""
        self.stats.diverted += 1
        self._tell("diverted", 0.0)

    def submit(self, run: Callable[[float], Awaitable[float]], per_shadow_usd: float) -> bool:
        """Start one shadow now if a slot and money are free; False when it was skipped."""
        if len(self._tasks) >= self.max_in_flight:
            self.stats.skipped_busy += 1
            self._tell("skipped_busy", 0.0)
            return False
        reserved = self.budget.reserve(per_shadow_usd)
        if reserved <= 0.0:
            self.stats.skipped_budget += 1
            self._tell("skipped_budget", 0.0)
            return False
        task = asyncio.get_running_loop().create_task(self._run(run, reserved))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, run: Callable[[float], Awaitable[float]], reserved: float) -> None:
        spent, outcome = 0.0, "failed"
        try:
            spent = await run(reserved)
            outcome = "sent"
            self.stats.sent += 1
        except Exception as exc:  # noqa: BLE001 - a shadow's failure is recorded on its span, never raised
            self.stats.failed += 1
            log.debug("shadow failed: %s", exc)
        finally:
            self.budget.settle(reserved, spent)
            self.stats.spent_usd += spent
            self._tell(outcome, spent)

    def _tell(self, outcome: str, spent: float) -> None:
        if self.on_outcome is not None:
            self.on_outcome(outcome, spent)

    @property
    def in_flight(self) -> int:
        """Shadows started and not yet finished (their stats and spend are not counted yet)."""
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait for the shadows in flight (shutdown, tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
