"""Guard end to end on a real DuckDB file: synthetic spans and scores → decision → pointer + row."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector.store import insert_rows, open_store
from router.rollout.actions import manual_promote, manual_rollback, start_canary
from router.rollout.guard import Guard, GuardConfig
from router.rollout.sequential import SequentialConfig
from router.rollout.store import DirectoryRuleStore

EVALUATOR = "ocr_faithfulness"


def setup_rollout(tmp_path: Path) -> tuple[DirectoryRuleStore, Path]:
    store = DirectoryRuleStore(tmp_path / "rules")
    a = store.propose("name: a\n", author="ana")
    b = store.propose("name: b\n", author="optimizer")
    store.activate(a.id)
    db = tmp_path / "aperture.duckdb"
    start_canary(store, b.id, 0.2, db_path=db, actor="optimizer")
    return store, db


def write_traffic(db: Path, store: DirectoryRuleStore, n: int, p_active: float, p_canary: float,
                  seed: int, *, errors_canary: float = 0.0, cost_canary: float = 0.001,
                  offset: int = 0, evaluator: str | None = EVALUATOR) -> None:
    p = store.pointer()
    assert p.canary_started_at is not None
    rng = np.random.default_rng(seed)
    requests, scores, images = [], [], []
    for i in range(offset, offset + n):
        canary = bool(rng.random() < p.canary_fraction)
        ts = p.canary_started_at + timedelta(milliseconds=10 * (i + 1))
        span = f"s{i:06d}"
        failed = canary and rng.random() < errors_canary
        requests.append({"trace_id": f"t{i:06d}", "span_id": span, "ts": ts, "request_id": f"r{i}",
                         "ruleset_version": p.canary if canary else p.active,
                         "arm": "canary" if canary else "active",
                         "status": "error" if failed else "ok"})
        if not failed and evaluator is not None:
            score = float(np.clip(rng.normal(p_canary if canary else p_active, 0.08), 0, 1))
            scores.append({"trace_id": f"t{i:06d}", "span_id": span, "evaluator": evaluator,
                           "evaluator_version": "1", "status": "scored", "score": score,
                           "passed": score > 0.8, "ts": ts})
        images.append({"trace_id": f"t{i:06d}", "span_id": f"i{i:06d}", "request_span_id": span,
                       "ts": ts, "cost_usd": cost_canary if canary else 0.001})
    # Traffic from before the canary and from an unrelated version must be ignored.
    requests.append({"trace_id": "old", "span_id": "old", "ts": p.canary_started_at - timedelta(hours=1),
                     "ruleset_version": p.active, "arm": "active", "status": "error"})
    with open_store(db) as conn:
        insert_rows(conn, "request_spans", requests)
        insert_rows(conn, "eval_scores", scores)
        insert_rows(conn, "image_spans", images)


def rollouts(db: Path) -> list[tuple]:
    with open_store(db, read_only=True) as conn:
        return conn.execute(
            "SELECT decision, candidate_version, active_version, n_canary, n_active, statistics, reason"
            " FROM rollouts ORDER BY ts").fetchall()


def test_clearly_worse_canary_is_rolled_back_and_recorded(tmp_path: Path) -> None:
    store, db = setup_rollout(tmp_path)
    write_traffic(db, store, 3000, 0.92, 0.80, seed=1)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    guard = Guard(db, store, GuardConfig(evaluators=(EVALUATOR,)), tracer_provider=provider)
    preview = guard.preview()
    assert preview.action == "rollback" and store.pointer().canary == "v0002"
    assert [r[0] for r in rollouts(db)] == ["start"]
    decision = guard.step()
    assert decision.action == "rollback", decision.reason
    assert "quality" in decision.reason
    p = store.pointer()
    assert (p.active, p.canary) == ("v0001", None)
    assert store.history()[-1].actor == "guard" and store.history()[-1].reason == decision.reason
    rows = rollouts(db)
    assert [r[0] for r in rows] == ["start", "rollback"]
    _, cand, active, n_canary, n_active, stats, reason = rows[-1]
    assert (cand, active) == ("v0002", "v0001") and n_canary + n_active == 3000
    stats = json.loads(stats)
    m = stats["metrics"]["quality"]
    assert m["e_rollback"] >= m["threshold_rollback"] and m["mean_canary"] < m["mean_active"]
    events = [e for s in exporter.get_finished_spans() for e in s.events]
    assert [e.name for e in events] == ["aperture.rollout.decision"]
    assert events[0].attributes["aperture.rollout.action"] == "rollback"
    # Nothing left to guard.
    assert guard.step().action == "idle" and len(rollouts(db)) == 2


def test_equal_canary_is_never_rolled_back(tmp_path: Path) -> None:
    store, db = setup_rollout(tmp_path)
    guard = Guard(db, store, GuardConfig(evaluators=(EVALUATOR,)))
    seen = []
    for chunk in range(4):
        write_traffic(db, store, 1500, 0.9, 0.9, seed=10 + chunk, offset=1500 * chunk)
        decision = guard.step()
        seen.append(decision.action)
        assert decision.action in ("extend", "promote"), decision.reason
        if decision.action == "promote":
            break
    assert "promote" in seen
    assert store.pointer().active == "v0002"
    assert [r[0] for r in rollouts(db)] == ["start", *seen]


def test_step_is_idempotent_when_nothing_is_new(tmp_path: Path) -> None:
    store, db = setup_rollout(tmp_path)
    write_traffic(db, store, 40, 0.9, 0.9, seed=3)
    guard = Guard(db, store, GuardConfig(evaluators=(EVALUATOR,)))
    first = guard.step()
    assert first.action == "extend"
    again = Guard(db, store, GuardConfig(evaluators=(EVALUATOR,))).step()  # another process
    assert again.action == "extend" and again.statistics["fingerprint"] == first.statistics["fingerprint"]
    assert [r[0] for r in rollouts(db)] == ["start", "extend"]
    write_traffic(db, store, 40, 0.9, 0.9, seed=4, offset=40)
    guard.step()
    assert [r[0] for r in rollouts(db)] == ["start", "extend", "extend"]


def test_error_rate_and_cost_rails_roll_back(tmp_path: Path) -> None:
    store, db = setup_rollout(tmp_path)
    write_traffic(db, store, 3000, 0.9, 0.9, seed=5, errors_canary=0.3)
    decision = Guard(db, store, GuardConfig(evaluators=(EVALUATOR,))).step()
    assert decision.action == "rollback" and "success_rate" in decision.reason

    store2, db2 = setup_rollout(tmp_path / "second")
    write_traffic(db2, store2, 1000, 0.9, 0.9, seed=6, cost_canary=0.003)
    decision = Guard(db2, store2, GuardConfig(evaluators=(EVALUATOR,))).step()
    assert decision.action == "rollback" and "cost per image" in decision.reason


def test_dry_run_records_without_acting(tmp_path: Path) -> None:
    store, db = setup_rollout(tmp_path)
    write_traffic(db, store, 3000, 0.92, 0.80, seed=7)
    decision = Guard(db, store, GuardConfig(evaluators=(EVALUATOR,), act=False)).step()
    assert decision.action == "rollback"
    assert store.pointer().canary == "v0002"


def test_manual_actions_are_recorded(tmp_path: Path) -> None:
    store, db = setup_rollout(tmp_path)
    manual_promote(store, db_path=db, actor="ana", reason="looks fine")
    assert store.pointer().active == "v0002"
    manual_rollback(store, db_path=db, actor="ana")
    assert store.pointer().active == "v0001"
    rows = rollouts(db)
    assert [r[0] for r in rows] == ["start", "manual_promote", "manual_rollback"]
    assert rows[1][6] == "looks fine"


def test_no_canary_is_idle(tmp_path: Path) -> None:
    store = DirectoryRuleStore(tmp_path / "rules")
    decision = Guard(tmp_path / "x.duckdb", store).step()
    assert decision.action == "idle"
    assert not (tmp_path / "x.duckdb").exists()


@pytest.mark.parametrize("bad", [1.7, -0.2])
def test_out_of_range_scores_are_clipped_not_fatal(tmp_path: Path, bad: float) -> None:
    store, db = setup_rollout(tmp_path)
    write_traffic(db, store, 50, 0.9, 0.9, seed=8)
    with open_store(db) as conn:
        conn.execute("UPDATE eval_scores SET score = ? WHERE span_id = 's000001'", [bad])
    assert Guard(db, store, GuardConfig(evaluators=(EVALUATOR,))).step().action == "extend"


def test_configured_evaluators_without_scores_block_promotion(tmp_path: Path) -> None:
    store, db = setup_rollout(tmp_path)
    write_traffic(db, store, 6000, 0.9, 0.9, seed=21, evaluator=None)
    decision = Guard(db, store, GuardConfig(evaluators=(EVALUATOR, "grounding"))).step()
    assert decision.action == "extend" and "quality" in decision.reason
    assert decision.statistics["metrics"]["success_rate"]["action"] == "promote"
    assert store.pointer().canary == "v0002"


def test_per_evaluator_mode_skips_absent_evaluators_and_names_the_regressed_one(tmp_path: Path) -> None:
    store, db = setup_rollout(tmp_path)
    write_traffic(db, store, 6000, 0.9, 0.9, seed=22)
    config = GuardConfig(evaluators=(EVALUATOR, "grounding"), per_evaluator=True)
    decision = Guard(db, store, config).step()
    assert decision.action == "promote", decision.reason
    assert set(decision.statistics["metrics"]) == {EVALUATOR, "success_rate"}

    store2, db2 = setup_rollout(tmp_path / "second")
    write_traffic(db2, store2, 2000, 0.9, 0.9, seed=23)
    write_traffic(db2, store2, 2000, 0.9, 0.7, seed=24, offset=2000, evaluator="grounding")
    decision = Guard(db2, store2, config).step()
    assert decision.action == "rollback" and "grounding" in decision.reason
    assert EVALUATOR not in decision.reason


def write_paired_traffic(db: Path, store: DirectoryRuleStore, n: int, seed: int, *, canary_score: float = 0.9,
                         shadow_score: float = 0.9, errors_canary: float = 0.0,
                         shadow_every: int = 1, shadow_errors: bool = True, active_every: int = 0) -> None:
    """n canary requests (one image each, its own sha256), every `shadow_every`-th followed by a
    shadow: a replay of the same image and task on the active version. With `shadow_errors`
    False only successful canary requests get one (what a sender that replays captured
    successes does). With `active_every` k > 0, every k-th step also has a live request on the
    active arm (another image, never failing)."""
    p = store.pointer()
    assert p.canary_started_at is not None
    rng = np.random.default_rng(seed)
    requests, scores, images = [], [], []

    def add(i: int, kind: str, version: str, arm: str, failed: bool, score: float, replay: bool, ms: int) -> None:
        ts = p.canary_started_at + timedelta(milliseconds=ms)
        span = f"{kind}{i:06d}"
        requests.append({"trace_id": f"t{kind}{i:06d}", "span_id": span, "ts": ts, "ruleset_version": version,
                         "arm": arm, "status": "error" if failed else "ok", "replay": replay, "task": "transcribe"})
        images.append({"trace_id": f"t{kind}{i:06d}", "span_id": f"i{kind}{i:06d}", "request_span_id": span, "ts": ts,
                       "sha256": f"{i:064x}", "width": 100, "height": 100, "cost_usd": 0.001})
        if not failed:
            scores.append({"trace_id": f"t{kind}{i:06d}", "span_id": span, "evaluator": EVALUATOR,
                           "evaluator_version": "1", "status": "scored", "ts": ts,
                           "score": float(np.clip(rng.normal(score, 0.02), 0, 1))})

    for i in range(n):
        failed = bool(rng.random() < errors_canary)
        add(i, "c", p.canary, "canary", failed, canary_score, False, 10 * i + 1)
        if i % shadow_every == 0 and (shadow_errors or not failed):
            add(i, "s", p.active, "active", False, shadow_score, True, 10 * i + 5)
        if active_every and i % active_every == 0:
            add(n + i, "a", p.active, "active", False, shadow_score, False, 10 * i + 7)
    with open_store(db) as conn:
        insert_rows(conn, "request_spans", requests)
        insert_rows(conn, "eval_scores", scores)
        insert_rows(conn, "image_spans", images)


PAIRED = GuardConfig(evaluators=(EVALUATOR,), error_delta=0.1, paired=True,
                     sequential=SequentialConfig(delta=0.1, beta=0.1))


def test_paired_guard_decides_quality_on_pairs(tmp_path: Path) -> None:
    store, db = setup_rollout(tmp_path)
    write_paired_traffic(db, store, 80, seed=31, active_every=1)
    decision = Guard(db, store, PAIRED).step()
    quality = decision.statistics["metrics"]["quality"]
    assert quality["paired"] and quality["n_canary"] == 80 and quality["action"] == "promote"
    errors = decision.statistics["metrics"]["success_rate"]
    assert (errors["n_canary"], errors["n_active"]) == (80, 80)  # live arms only: shadows are replays


def test_paired_guard_counts_canary_errors_that_no_shadow_answers(tmp_path: Path) -> None:
    # Only successes are shadowed (a sender replaying captured successes), so every pair looks
    # fine: the errors are still compared between the live arms, and roll the canary back.
    store, db = setup_rollout(tmp_path)
    write_paired_traffic(db, store, 400, seed=32, errors_canary=0.4, shadow_errors=False, active_every=1)
    decision = Guard(db, store, PAIRED).step()
    assert decision.action == "rollback" and "success_rate" in decision.reason
    errors = decision.statistics["metrics"]["success_rate"]
    assert errors["n_canary"] == 400 and errors["mean_canary"] < 0.7 and errors["mean_active"] == 1.0
    assert decision.statistics["metrics"]["quality"]["action"] != "rollback"  # the pairs alone would not have


def test_explicit_replays_are_not_shadows(tmp_path: Path) -> None:
    # An optimizer replay of the same image to a named route (arm 'explicit', on the active
    # version) must neither pair with canary requests nor count as the active version's answer.
    store, db = setup_rollout(tmp_path)
    write_paired_traffic(db, store, 40, seed=34, shadow_every=10**6)  # one real shadow: image 0
    p = store.pointer()
    assert p.canary_started_at is not None
    rows, scores = [], []
    for i in range(40):
        ts = p.canary_started_at + timedelta(milliseconds=10 * i + 7)
        rows.append({"trace_id": f"tx{i}", "span_id": f"x{i:06d}", "ts": ts, "ruleset_version": p.active,
                     "arm": "explicit", "status": "error" if i % 2 else "ok", "replay": True, "task": "transcribe"})
        scores.append({"trace_id": f"tx{i}", "span_id": f"x{i:06d}", "evaluator": EVALUATOR, "evaluator_version": "1",
                       "status": "scored", "ts": ts, "score": 0.1})
    with open_store(db) as conn:
        insert_rows(conn, "request_spans", rows)
        insert_rows(conn, "eval_scores", scores)
        insert_rows(conn, "image_spans", [{"trace_id": f"tx{i}", "span_id": f"ix{i}", "request_span_id": f"x{i:06d}",
                                           "ts": rows[i]["ts"], "sha256": f"{i:064x}", "width": 100, "height": 100}
                                          for i in range(40)])
    decision = Guard(db, store, PAIRED).preview()
    assert decision.statistics["metrics"]["quality"]["n_canary"] == 1
    assert decision.statistics["metrics"]["success_rate"]["n_active"] == 0
