from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from router.rollout.memory import InMemoryRuleStore
from router.rollout.policy import NoActiveRuleset, PolicyHolder, RolloutSnapshot
from router.rollout.store import DirectoryRuleStore


@dataclass(frozen=True)
class FakePolicy:
    version: str
    text: str


def build(version: str, text: str) -> FakePolicy:
    if "BROKEN" in text:
        raise ValueError("cannot build this ruleset")
    return FakePolicy(version, text)


def fraction_for(version: str) -> float:
    return int(version[1:]) / 1000


def test_snapshot_before_anything_is_active_is_refused() -> None:
    holder = PolicyHolder(InMemoryRuleStore(), build)
    assert holder.refresh() is False
    with pytest.raises(NoActiveRuleset) as info:
        holder.snapshot()
    assert info.value.code == "no_active_ruleset" and info.value.status == 503
    assert holder.try_snapshot() is None


def test_snapshots_stay_consistent_through_100_switches() -> None:
    store = InMemoryRuleStore()
    ids = [store.propose(f"rules: {i}\n", author="t").id for i in range(12)]
    store.activate(ids[0])
    holder: PolicyHolder[FakePolicy] = PolicyHolder(store, build, poll_interval_s=0.0005)
    holder.start()
    stop = threading.Event()
    problems: list[str] = []
    taken = [0]
    generations: set[int] = set()

    def route() -> None:
        last_generation = -1
        while not stop.is_set():
            try:
                snap = holder.snapshot()
                # One request: read everything from the one snapshot, several times.
                for _ in range(3):
                    if snap.active.version != snap.active_version:
                        problems.append(f"active mismatch {snap}")
                    if snap.canary is not None and (
                        snap.canary.version != snap.canary_version
                        or snap.canary_fraction != fraction_for(snap.canary.version)
                    ):
                        problems.append(f"canary mismatch {snap}")
                    if snap.canary is None and snap.canary_fraction != 0.0:
                        problems.append(f"fraction without canary {snap}")
                if snap.generation < last_generation:
                    problems.append("generation went backwards")
                last_generation = snap.generation
                taken[0] += 1
                generations.add(snap.generation)
                time.sleep(0)  # yield the GIL like a request doing I/O
            except Exception as exc:  # noqa: BLE001 - any exception is the finding
                problems.append(repr(exc))

    threads = [threading.Thread(target=route) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(100):
        pointer = store.pointer()
        if pointer.canary is None:
            canary = next(v for v in ids[(i % 12):] + ids if v != pointer.active)
            store.start_canary(canary, fraction_for(canary))
        elif i % 4 == 1:
            store.promote()
        else:
            store.rollback()
        if i % 2 == 0:
            holder.refresh()  # the poller thread refreshes too, concurrently
        time.sleep(0.001)  # let readers run between switches
    holder.refresh()
    stop.set()
    for t in threads:
        t.join()
    holder.stop()
    assert problems == []
    assert taken[0] > 100
    assert len(generations) > 5  # the readers really saw the pointer move
    assert holder.snapshot().generation == store.pointer().generation
    assert holder.load_failures == 0


def test_failed_build_never_becomes_current(tmp_path: Path) -> None:
    store = DirectoryRuleStore(tmp_path)
    good = store.propose("rules: good\n", author="t")
    broken = store.propose("rules: BROKEN\n", author="t")
    later = store.propose("rules: later\n", author="t")
    store.activate(good.id)
    holder = PolicyHolder(store, build)
    assert holder.refresh() is True
    store.start_canary(broken.id, 0.5)
    assert holder.refresh() is False
    assert holder.load_failures == 1 and "cannot build" in (holder.last_error or "")
    snap = holder.snapshot()
    assert (snap.active_version, snap.canary) == (good.id, None)
    assert holder.refresh() is False and holder.load_failures == 1  # not retried every poll
    # A corrupted file is refused the same way.
    store.rollback()
    store.start_canary(later.id, 0.5)
    (tmp_path / "versions" / f"{later.id}.yaml").write_text("rules: la")
    assert holder.refresh() is False and holder.load_failures == 2
    assert "sha256" in (holder.last_error or "")
    assert holder.snapshot().active_version == good.id


def test_snapshot_factory_builds_the_routers_snapshot_type() -> None:
    from router.policy import PolicySnapshot

    store = InMemoryRuleStore()
    a = store.propose("rules: a\n", author="t")
    b = store.propose("rules: b\n", author="t")
    store.activate(a.id)
    store.start_canary(b.id, 0.25)
    holder = PolicyHolder(store, build, snapshot_factory=PolicySnapshot)
    holder.refresh()
    snap = holder.snapshot()
    assert isinstance(snap, PolicySnapshot)
    assert (snap.active.version, snap.canary.version, snap.canary_fraction) == (a.id, b.id, 0.25)


async def test_async_watch_picks_up_changes() -> None:
    store = InMemoryRuleStore()
    a = store.propose("rules: a\n", author="t")
    b = store.propose("rules: b\n", author="t")
    store.activate(a.id)
    holder = PolicyHolder(store, build, poll_interval_s=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(holder.watch(stop))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if holder.try_snapshot() is not None:
            break
    store.activate(b.id)
    for _ in range(200):
        await asyncio.sleep(0.01)
        if holder.snapshot().active_version == b.id:
            break
    stop.set()
    await task
    assert isinstance(holder.snapshot(), RolloutSnapshot)
    assert holder.snapshot().active_version == b.id
