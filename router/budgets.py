"""Spend control: a per-request cost cap and daily budgets per key and per team.

Before any upstream call the router *reserves* the request's estimated cost against the key's
and the team's budget for the current UTC day; a request that would take spent + reserved +
estimate past either budget is refused (402 ``budget_exceeded``). When the answer arrives the
reservation is *settled* with the billed cost (which may differ from the estimate), or
*released* when the request failed. Reserving first means a burst of concurrent requests
cannot all slip under the same remaining budget.

The ledger is in memory and per process: several replicas each keep their own ledger, so each
enforces the full budget on its own share of traffic (a shared store is future work).
:meth:`BudgetLedger.snapshot` / :meth:`BudgetLedger.restore` with :func:`write_snapshot` /
:func:`read_snapshot` let the app persist it atomically on shutdown and reload it on start.
Spending resets at UTC midnight; reservations in flight at midnight stay reserved and settle
into the new day.

All methods are synchronous (no awaits), so they are atomic on one event loop.

Example::

    ledger = BudgetLedger.from_config(config)
    cap = check_request_cap(0.012, request.headers.get("x-aperture-max-cost-usd"),
                            config.budgets.max_request_cost_usd)
    r = ledger.reserve(principal, 0.012)
    try: ... ledger.settle(r, billed_usd)
    except Exception: ledger.release(r); raise
"""

from __future__ import annotations

import itertools
import json
import math
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router.errors import BudgetExceeded, InvalidRequest
from router.keys import Principal

if TYPE_CHECKING:
    from router.config import AppConfig

MAX_COST_HEADER = "x-aperture-max-cost-usd"
SNAPSHOT_VERSION = 1


def parse_cost_header(value: str | None) -> float | None:
    """The ``x-aperture-max-cost-usd`` value in USD, ``None`` when absent; bad values refused."""
    if value is None:
        return None
    try:
        cap = float(value.strip())
    except ValueError:
        cap = math.nan
    if not math.isfinite(cap) or cap <= 0:
        raise InvalidRequest(
            f"{MAX_COST_HEADER} must be a positive number of US dollars, got {value[:40]!r}",
            code="invalid_header",
            param=MAX_COST_HEADER,
        )
    return cap


def check_request_cap(
    estimate_usd: float, header_cap: str | None, config_cap: float | None
) -> float | None:
    """Refuse a request whose estimated cost exceeds its cap; return the cap that applied.

    The cap is the smaller of the header's and the config's: a client may tighten the gateway's
    default, never loosen it.
    """
    caps = [c for c in (parse_cost_header(header_cap), config_cap) if c is not None]
    if not caps:
        return None
    cap = min(caps)
    if estimate_usd > cap:
        raise BudgetExceeded(
            f"the estimated cost ${estimate_usd:.6f} exceeds the request's cap of ${cap:.6f}",
            code="max_cost_exceeded",
        )
    return cap


@dataclass(frozen=True)
class Reservation:
    id: int
    key_id: str
    team: str
    amount_usd: float
    day: date
    origin: str = "memory"  # which state backend holds it (settled where it was reserved)


def _utc_day(clock: Callable[[], float]) -> Callable[[], date]:
    return lambda: datetime.fromtimestamp(clock(), UTC).date()


class BudgetLedger:
    """Today's spend and open reservations per key and team (see the module docstring)."""

    def __init__(
        self,
        team_budgets: Mapping[str, float | None] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        day_fn: Callable[[], date] | None = None,
    ) -> None:
        self.team_budgets = dict(team_budgets or {})
        self._day_fn = day_fn or _utc_day(clock)
        self._day = self._day_fn()
        self._spent_team: defaultdict[str, float] = defaultdict(float)
        self._spent_key: defaultdict[str, float] = defaultdict(float)
        self._reserved_team: defaultdict[str, float] = defaultdict(float)
        self._reserved_key: defaultdict[str, float] = defaultdict(float)
        self._open: dict[int, Reservation] = {}
        self._ids = itertools.count(1)

    check_request_cap = staticmethod(check_request_cap)

    @classmethod
    def from_config(cls, config: AppConfig, **kwargs: Any) -> BudgetLedger:
        budgets = {name: team.daily_budget_usd for name, team in config.teams.items()}
        return cls(budgets, **kwargs)

    @property
    def day(self) -> date:
        self._roll()
        return self._day

    def _roll(self) -> None:
        today = self._day_fn()
        if today != self._day:
            self._day = today
            self._spent_team.clear()
            self._spent_key.clear()

    def spent_today(self, team: str) -> float:
        self._roll()
        return self._spent_team.get(team, 0.0)

    def spent_today_key(self, key_id: str) -> float:
        self._roll()
        return self._spent_key.get(key_id, 0.0)

    def reserved(self, team: str) -> float:
        return self._reserved_team.get(team, 0.0)

    def reserve(self, principal: Principal, estimate_usd: float) -> Reservation:
        """Hold ``estimate_usd`` against the key's and the team's budgets, or raise BudgetExceeded."""
        self._roll()
        amount = max(0.0, float(estimate_usd)) if math.isfinite(estimate_usd) else 0.0
        checks = (
            ("key", principal.key_id, principal.daily_budget_usd, self._spent_key, self._reserved_key),
            ("team", principal.team, self.team_budgets.get(principal.team), self._spent_team,
             self._reserved_team),
        )
        for what, name, budget, spent_by, reserved_by in checks:
            if budget is None:
                continue
            spent, held = spent_by.get(name, 0.0), reserved_by.get(name, 0.0)
            if spent + held + amount > budget or spent + held >= budget:
                label = f"team {name!r}" if what == "team" else "this key"
                raise BudgetExceeded(
                    f"the daily budget of ${budget:.2f} for {label} would be exceeded (spent "
                    f"${spent:.4f}, in flight ${held:.4f}, this request up to ${amount:.4f}); "
                    "it resets at 00:00 UTC"
                )
        reservation = Reservation(next(self._ids), principal.key_id, principal.team, amount, self._day)
        self._open[reservation.id] = reservation
        self._reserved_key[principal.key_id] += amount
        self._reserved_team[principal.team] += amount
        return reservation

    def _close(self, reservation: Reservation) -> bool:
        if self._open.pop(reservation.id, None) is None:
            return False  # already settled or released: idempotent
        for book, name in ((self._reserved_key, reservation.key_id), (self._reserved_team, reservation.team)):
            left = book[name] - reservation.amount_usd
            if left <= 1e-12:
                del book[name]
            else:
                book[name] = left
        return True

    def settle(self, reservation: Reservation, billed_usd: float) -> None:
        """Replace the reservation with what was billed, counted in today's spend."""
        if not self._close(reservation):
            return
        self._roll()
        billed = max(0.0, float(billed_usd)) if math.isfinite(billed_usd) else 0.0
        self._spent_key[reservation.key_id] += billed
        self._spent_team[reservation.team] += billed

    def release(self, reservation: Reservation) -> None:
        """Drop the reservation without spending (the request failed before being billed)."""
        self._close(reservation)

    def snapshot(self) -> dict[str, Any]:
        """Today's settled spend as JSON-ready data (open reservations are not persisted)."""
        self._roll()
        return {
            "version": SNAPSHOT_VERSION,
            "day": self._day.isoformat(),
            "teams": dict(self._spent_team),
            "keys": dict(self._spent_key),
        }

    def restore(self, data: Mapping[str, Any]) -> bool:
        """Load a :meth:`snapshot`; a snapshot from another day is ignored (returns ``False``)."""
        if not isinstance(data, Mapping) or data.get("version") != SNAPSHOT_VERSION:
            raise ValueError("not a budget ledger snapshot")
        try:
            day = date.fromisoformat(str(data["day"]))
            teams = {str(k): float(v) for k, v in dict(data.get("teams") or {}).items()}
            keys = {str(k): float(v) for k, v in dict(data.get("keys") or {}).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed budget ledger snapshot: {exc}") from exc
        if any(not math.isfinite(v) or v < 0 for v in (*teams.values(), *keys.values())):
            raise ValueError("malformed budget ledger snapshot: negative or non-finite spend")
        self._roll()
        if day != self._day:
            return False
        self._spent_team = defaultdict(float, teams)
        self._spent_key = defaultdict(float, keys)
        return True


def write_snapshot(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON atomically (temp file in the same folder, fsync, rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_snapshot(path: str | Path) -> dict[str, Any] | None:
    """The JSON at ``path``, or ``None`` when there is no file yet."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a budget ledger snapshot")
    return data
