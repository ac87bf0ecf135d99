from __future__ import annotations

import contextlib
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from router.budgets import (
    BudgetLedger,
    check_request_cap,
    parse_cost_header,
    read_snapshot,
    write_snapshot,
)
from router.errors import BudgetExceeded, InvalidRequest
from router.keys import Principal

# 2026-11-26 23:59:00 UTC
LATE = datetime(2026, 11, 26, 23, 59, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self, now: float = LATE) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


ALICE = Principal("vk_alice", "search", daily_budget_usd=None)
BOB = Principal("vk_bob", "search", daily_budget_usd=0.5)


def ledger(clock: Clock | None = None, team_budget: float | None = 1.0) -> BudgetLedger:
    return BudgetLedger({"search": team_budget}, clock=clock or Clock())


# --- per-request cap -------------------------------------------------------------------------


def test_request_cap_from_header_and_config() -> None:
    assert check_request_cap(0.01, None, None) is None
    assert check_request_cap(0.01, "0.05", None) == 0.05
    assert check_request_cap(0.01, "0.50", 0.02) == 0.02  # the header cannot loosen the config
    assert BudgetLedger.check_request_cap(0.01, " 0.02 ", 0.05) == 0.02
    with pytest.raises(BudgetExceeded) as info:
        check_request_cap(0.03, "0.02", None)
    assert info.value.status == 402 and info.value.code == "max_cost_exceeded"
    with pytest.raises(BudgetExceeded):
        check_request_cap(0.03, None, 0.02)


@pytest.mark.parametrize("value", ["", "abc", "-1", "0", "nan", "inf", "1e400", "$1"])
def test_invalid_cost_header_is_refused(value: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        check_request_cap(0.0, value, None)
    err = info.value
    assert err.status == 400 and err.code == "invalid_header" and err.param == "x-aperture-max-cost-usd"


@settings(deadline=None)
@given(st.floats(min_value=1e-9, max_value=1e6))
def test_cost_header_roundtrip(cap: float) -> None:
    assert parse_cost_header(repr(cap)) == cap


# --- daily budgets ---------------------------------------------------------------------------


def test_team_budget_reserve_settle_release() -> None:
    book = ledger()
    r1 = book.reserve(ALICE, 0.6)
    assert book.reserved("search") == pytest.approx(0.6)
    with pytest.raises(BudgetExceeded) as info:
        book.reserve(ALICE, 0.5)  # 0.6 in flight + 0.5 > 1.0
    assert info.value.status == 402 and info.value.code == "budget_exceeded"
    assert "team 'search'" in info.value.message
    book.settle(r1, 0.3)  # billed less than estimated
    assert book.spent_today("search") == pytest.approx(0.3)
    assert book.reserved("search") == 0
    r2 = book.reserve(ALICE, 0.5)
    book.release(r2)
    assert book.spent_today("search") == pytest.approx(0.3) and book.reserved("search") == 0
    book.settle(r2, 99.0)  # already released: settling again is a no-op
    book.release(r1)
    assert book.spent_today("search") == pytest.approx(0.3)


def test_key_budget_is_checked_before_the_team_budget() -> None:
    book = ledger(team_budget=None)
    book.settle(book.reserve(BOB, 0.4), 0.4)
    with pytest.raises(BudgetExceeded) as info:
        book.reserve(BOB, 0.2)
    assert "this key" in info.value.message
    book.reserve(ALICE, 0.2)  # same team, unlimited key and team
    assert book.spent_today_key("vk_bob") == pytest.approx(0.4)


def test_exhausted_budget_refuses_even_free_requests() -> None:
    book = ledger()
    book.settle(book.reserve(ALICE, 0.9), 1.2)  # the bill overshot the estimate
    with pytest.raises(BudgetExceeded):
        book.reserve(ALICE, 0.0)


def test_concurrent_reservations_cannot_overspend() -> None:
    book = ledger()
    granted = []
    for _ in range(20):
        with contextlib.suppress(BudgetExceeded):
            granted.append(book.reserve(ALICE, 0.15))
    assert len(granted) == 6  # 6 * 0.15 = 0.9 <= 1.0 < 7 * 0.15


def test_resets_at_utc_midnight_keeping_in_flight_reservations() -> None:
    clock = Clock()
    book = ledger(clock)
    book.settle(book.reserve(ALICE, 0.5), 0.5)
    in_flight = book.reserve(ALICE, 0.4)
    assert book.day == date(2026, 11, 26)
    clock.now += 61  # 00:00:01 next day
    assert book.day == date(2026, 11, 27)
    assert book.spent_today("search") == 0
    assert book.reserved("search") == pytest.approx(0.4)
    book.settle(in_flight, 0.4)
    assert book.spent_today("search") == pytest.approx(0.4)
    book.reserve(ALICE, 0.6)


def test_day_fn_overrides_the_clock() -> None:
    day = [date(2026, 1, 1)]
    book = BudgetLedger({"search": 1.0}, day_fn=lambda: day[0])
    book.settle(book.reserve(ALICE, 1.0), 1.0)
    with pytest.raises(BudgetExceeded):
        book.reserve(ALICE, 0.1)
    day[0] = date(2026, 1, 2)
    book.reserve(ALICE, 0.1)


def test_snapshot_restore_and_atomic_file(tmp_path: Path) -> None:
    clock = Clock()
    book = ledger(clock)
    book.settle(book.reserve(ALICE, 0.5), 0.25)
    book.reserve(ALICE, 0.1)  # in flight: not persisted
    path = tmp_path / "state" / "budgets.json"
    write_snapshot(path, book.snapshot())
    assert [p.name for p in path.parent.iterdir()] == ["budgets.json"]  # no temp file left
    data = read_snapshot(path)
    assert data == {"version": 1, "day": "2026-11-26", "teams": {"search": 0.25}, "keys": {"vk_alice": 0.25}}

    fresh = ledger(clock)
    assert fresh.restore(data) is True
    assert fresh.spent_today("search") == 0.25 and fresh.reserved("search") == 0

    clock.now += 3600  # the next day: yesterday's spend is not restored
    tomorrow = ledger(clock)
    assert tomorrow.restore(data) is False
    assert tomorrow.spent_today("search") == 0


def test_restore_refuses_malformed_snapshots(tmp_path: Path) -> None:
    book = ledger()
    for bad in (
        {},
        {"version": 2, "day": "2026-11-26"},
        {"version": 1, "day": "not-a-day"},
        {"version": 1, "day": "2026-11-26", "teams": {"a": "x"}},
        {"version": 1, "day": "2026-11-26", "teams": {"a": -1}},
    ):
        with pytest.raises(ValueError):
            book.restore(bad)
    assert read_snapshot(tmp_path / "missing.json") is None
    (tmp_path / "list.json").write_text(json.dumps([1]))
    with pytest.raises(ValueError):
        read_snapshot(tmp_path / "list.json")


@settings(deadline=None)
@given(st.lists(st.tuples(st.floats(0, 0.5), st.sampled_from(["settle", "release", "keep"])), max_size=40))
def test_spent_plus_reserved_never_passes_budget_by_reservation(ops: list[tuple[float, str]]) -> None:
    book = ledger(team_budget=2.0)
    for estimate, then in ops:
        try:
            r = book.reserve(ALICE, estimate)
        except BudgetExceeded:
            continue
        assert book.spent_today("search") + book.reserved("search") <= 2.0 + 1e-9
        if then == "settle":
            book.settle(r, estimate)  # billed == estimate keeps the invariant
        elif then == "release":
            book.release(r)
    assert book.reserved("search") >= 0
