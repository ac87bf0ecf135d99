"""Rule store contract, run against every backend."""

from __future__ import annotations

import json
import multiprocessing
import threading
from pathlib import Path

import pytest

from router.rollout.base import (
    CorruptVersion,
    InvalidRuleset,
    RolloutConflict,
    RolloutError,
    RuleStore,
    UnknownVersion,
    content_hash,
)
from router.rollout.memory import InMemoryRuleStore
from router.rollout.store import CorruptPointer, DirectoryRuleStore

TEXT_A = "name: a\nrules: []\ndefault:\n  route: {model: gpt-4o, detail: high}\n"
TEXT_B = "name: b\nrules: []\ndefault:\n  route: {model: gpt-4o-mini, detail: low}\n"


def refuse_mini(text: str) -> list[str]:
    return ["gpt-4o-mini is not allowed here"] if "gpt-4o-mini" in text else []


@pytest.fixture(params=["directory", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> RuleStore:
    if request.param == "directory":
        return DirectoryRuleStore(tmp_path / "rules")
    return InMemoryRuleStore()


def test_propose_assigns_sequential_ids_and_records_metadata(store: RuleStore) -> None:
    a = store.propose(TEXT_A, author="ana", note="first")
    store.activate(a.id)
    b = store.propose(TEXT_B, author="optimizer", provenance={"trial": 7})
    assert (a.id, b.id) == ("v0001", "v0002")
    assert a.parent is None and b.parent == "v0001"
    assert b.content_hash == content_hash(TEXT_B)
    assert store.get("v0002") == (b, TEXT_B)
    assert [v.id for v in store.list()] == ["v0001", "v0002"]
    assert store.get("v0002")[0].provenance == {"trial": 7}


def test_invalid_text_is_refused_with_its_problems_and_never_written(store: RuleStore) -> None:
    with pytest.raises(InvalidRuleset) as info:
        store.propose(TEXT_B, author="ana", validate=refuse_mini)
    assert info.value.problems == ["gpt-4o-mini is not allowed here"]
    assert info.value.code == "invalid_ruleset" and info.value.status == 422
    with pytest.raises(InvalidRuleset):
        store.propose("   \n", author="ana")
    assert store.list() == []


def test_invalid_version_is_never_activated(store: RuleStore) -> None:
    good = store.propose(TEXT_A, author="ana")
    unchecked = store.propose(TEXT_B, author="ana")  # stored without a validator
    store.activate(good.id)
    with pytest.raises(InvalidRuleset):
        store.start_canary(unchecked.id, 0.1, validate=refuse_mini)
    with pytest.raises(InvalidRuleset):
        store.activate(unchecked.id, validate=refuse_mini)
    assert store.pointer().active == good.id and store.pointer().canary is None


def test_unknown_versions_and_bad_fractions_are_refused(store: RuleStore) -> None:
    v = store.propose(TEXT_A, author="ana")
    with pytest.raises(UnknownVersion) as info:
        store.get("v0099")
    assert info.value.code == "ruleset_version_not_found"
    with pytest.raises(UnknownVersion):
        store.get("../pointer")
    with pytest.raises(RolloutConflict):
        store.start_canary(v.id, 0.1)  # nothing active yet
    store.activate(v.id)
    with pytest.raises(RolloutConflict):
        store.start_canary(v.id, 0.1)  # already active
    for bad in (0.0, 1.0, -0.5, 2.0):
        with pytest.raises(RolloutError) as err:
            store.start_canary(v.id, bad)
        assert err.value.code == "invalid_canary_fraction"
    with pytest.raises(RolloutConflict) as conflict:
        store.promote()
    assert conflict.value.status == 409


def test_canary_promote_rollback_and_history(store: RuleStore) -> None:
    a = store.propose(TEXT_A, author="ana")
    b = store.propose(TEXT_B, author="optimizer")
    c = store.propose(TEXT_A + "# c\n", author="optimizer")
    store.activate(a.id, actor="ana")
    p = store.start_canary(b.id, 0.2, actor="optimizer")
    assert (p.active, p.canary, p.canary_fraction) == (a.id, b.id, 0.2)
    assert p.canary_started_at is not None and p.rollout_id
    p = store.rollback(actor="guard", reason="score drop")
    assert (p.active, p.canary) == (a.id, None)
    store.start_canary(c.id, 0.1)
    p = store.promote(actor="guard", reason="holds")
    assert (p.active, p.canary, p.canary_fraction) == (c.id, None, 0.0)
    p = store.rollback(actor="ana")  # no canary: back to the previously active version
    assert p.active == a.id
    p = store.rollback(to=b.id)
    assert p.active == b.id
    events = store.history()
    assert [e.action for e in events] == ["activate", "start", "rollback", "start", "promote", "rollback", "rollback"]
    assert events[2].reason == "score drop" and events[2].before.canary == b.id
    assert [e.after.generation for e in events] == list(range(1, 8))


def test_stale_generation_is_refused(store: RuleStore) -> None:
    a = store.propose(TEXT_A, author="ana")
    b = store.propose(TEXT_B, author="ana")
    store.activate(a.id)
    p = store.start_canary(b.id, 0.1)
    store.promote()
    with pytest.raises(RolloutConflict):
        store.rollback(expect_generation=p.generation)


def test_diff_is_unified(store: RuleStore) -> None:
    a = store.propose(TEXT_A, author="ana")
    b = store.propose(TEXT_B, author="ana")
    out = store.diff(a.id, b.id)
    assert out.startswith("--- v0001\n+++ v0002\n")
    assert "-name: a\n" in out and "+name: b\n" in out
    assert store.diff(a.id, a.id) == ""


# -- directory-specific: files, hashes, atomicity, processes ------------------------------


def test_truncated_version_is_detected_and_refused(tmp_path: Path) -> None:
    store = DirectoryRuleStore(tmp_path)
    v = store.propose(TEXT_A, author="ana")
    path = tmp_path / "versions" / "v0001.yaml"
    path.write_bytes(path.read_bytes()[: len(TEXT_A) // 2])
    with pytest.raises(CorruptVersion) as info:
        store.get(v.id)
    assert info.value.code == "ruleset_version_corrupt"
    with pytest.raises(CorruptVersion):
        store.activate(v.id)
    assert store.pointer().active is None


def test_versions_are_never_rewritten(tmp_path: Path) -> None:
    store = DirectoryRuleStore(tmp_path)
    store.propose(TEXT_A, author="ana")
    before = {p.name: p.read_bytes() for p in (tmp_path / "versions").iterdir()}
    store.propose(TEXT_B, author="ana")
    store.activate("v0001")
    after = {p.name: p.read_bytes() for p in (tmp_path / "versions").iterdir()}
    assert {k: after[k] for k in before} == before
    assert sorted(after) == ["v0001.meta.json", "v0001.yaml", "v0002.meta.json", "v0002.yaml"]
    # A stray file that claims an id (half-finished proposal) is skipped, not reused.
    (tmp_path / "versions" / "v0003.yaml").write_text("partial")
    assert store.propose(TEXT_A, author="ana").id == "v0004"
    assert [v.id for v in store.list()] == ["v0001", "v0002", "v0004"]


def test_corrupt_pointer_is_refused_and_repaired_by_an_explicit_change(tmp_path: Path) -> None:
    store = DirectoryRuleStore(tmp_path)
    a = store.propose(TEXT_A, author="ana")
    b = store.propose(TEXT_B, author="ana")
    store.activate(a.id)
    store.start_canary(b.id, 0.1)
    (tmp_path / "pointer.json").write_text('{"active": "v00')
    with pytest.raises(CorruptPointer) as info:
        store.pointer()
    assert info.value.code == "rollout_pointer_corrupt"
    p = store.rollback(to=a.id, actor="ana", reason="repair")
    assert (p.active, p.canary, p.generation) == (a.id, None, 3)
    assert store.pointer() == p


def test_reader_never_sees_partial_pointer(tmp_path: Path) -> None:
    store = DirectoryRuleStore(tmp_path)
    ids = [store.propose(TEXT_A + f"# {i}\n", author="ana").id for i in range(3)]
    store.activate(ids[0])
    stop = threading.Event()
    seen: list[list[int]] = [[], [], []]
    errors: list[BaseException] = []

    def read(mine: list[int]) -> None:
        while not stop.is_set():
            try:
                raw = (tmp_path / "pointer.json").read_text()
                mine.append(json.loads(raw)["generation"])
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)

    readers = [threading.Thread(target=read, args=(mine,)) for mine in seen]
    for t in readers:
        t.start()
    for i in range(60):
        store.activate(ids[i % 3])
    stop.set()
    for t in readers:
        t.join()
    assert not errors
    for mine in seen:  # complete JSON every time, and generations never go backwards
        assert mine and mine == sorted(mine) and mine[0] >= 1
    assert store.pointer().generation == 61


def _propose_many(root: str, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    store = DirectoryRuleStore(root)
    out.put([store.propose(TEXT_A + f"# {i}\n", author="p").id for i in range(n)])


def test_concurrent_proposers_get_distinct_ids(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_propose_many, args=(str(tmp_path), 5, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    ids = [i for _ in procs for i in queue.get(timeout=60)]
    for p in procs:
        p.join(timeout=60)
    threads_ids: list[str] = []
    store = DirectoryRuleStore(tmp_path)
    workers = [threading.Thread(target=lambda: threads_ids.append(store.propose(TEXT_B, author="t").id))
               for _ in range(5)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    everything = ids + threads_ids
    assert len(set(everything)) == 20
    assert sorted(everything) == [f"v{i:04d}" for i in range(1, 21)]
    for v in store.list():
        store.get(v.id)  # every version complete and hash-valid
