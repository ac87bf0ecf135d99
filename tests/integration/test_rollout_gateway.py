"""Issue 7's "done when", through the real gateway on loopback: hot reload under load, refusal
of invalid versions, the /admin API, and an automatic rollback driven by real OCR, evals and
the guard."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import httpx
import openai
import pytest

from aperture.policies import ruleset_validator
from collector.store import open_store
from router.rollout import actions
from router.rollout.store import DirectoryRuleStore
from tests.integration.gateway_harness import (
    Stack,
    data_url,
    image_message,
    page_png,
    running_stack,
)

pytestmark = pytest.mark.slow

FAST_POLL = {"routing.poll_interval_s": 0.02}


def route_only(name: str, model: str, detail: str) -> str:
    """A ruleset that sends all of aperture/auto to one route (so the route names the version)."""
    return f"name: {name}\nclaims: []\nrules: []\ndefault:\n  route: {{model: {model}, detail: {detail}}}\n"


def served_generation(stack: Stack) -> int:
    """The pointer generation of the snapshot the gateway routes new requests with."""
    return int(stack.app.state.gateway._snapshot().generation)


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def wait_served(stack: Stack, store: DirectoryRuleStore) -> None:
    generation = store.pointer().generation
    wait_for(lambda: served_generation(stack) == generation, what=f"the gateway to serve generation {generation}")


def metric(stack: Stack, name: str) -> float:
    text = httpx.get(f"{stack.gateway}/metrics", timeout=10).text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert values, f"{name} not in /metrics"
    return values[0]


def client_for(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.gateway + "/v1", api_key="x", max_retries=0, timeout=60)


def rollout_rows(db: Path) -> list[tuple[Any, ...]]:
    with open_store(db, read_only=True) as conn:
        return conn.execute("SELECT decision, candidate_version, active_version, n_canary, reason, statistics"
                            " FROM rollouts ORDER BY ts").fetchall()


# ------------------------------------------------------------------ 1. hot reload under load
ROUTES = [("gpt-4o-mini", "low"), ("gpt-4.1", "high"), ("claude-haiku-4-5", "auto"),
          ("gemini-2.5-flash", "low"), ("gpt-4.1-mini", "low")]


def test_100_switches_under_load_fail_nothing_and_each_request_sees_one_version(tmp_path: Path) -> None:
    with running_stack(tmp_path, overrides=FAST_POLL, rules_store=tmp_path / "rules") as stack:
        store = DirectoryRuleStore(tmp_path / "rules", validate=ruleset_validator(stack.app.state.gateway.config))
        expected = {"v0001": "gpt-4o:high"}  # bootstrapped from examples/rules/baseline.yaml
        for i, (model, detail) in enumerate(ROUTES):
            v = store.propose(route_only(f"r{i}", model, detail), author="test")
            expected[v.id] = f"{model}:{detail}"
        versions = sorted(expected)
        stack.clear_emulator()

        stop = threading.Event()
        results: list[tuple[str, str, str, bool]] = []  # request id, ruleset header, route header, had image
        failures: list[str] = []
        image = data_url(page_png(64, 40, "V7"))

        def worker(seed: int) -> None:
            client = client_for(stack)
            n = seed
            while not stop.is_set():
                n += 1
                with_image = n % 2 == 0
                messages = image_message(image) if with_image else [{"role": "user", "content": f"hello {n}"}]
                try:
                    raw = client.chat.completions.with_raw_response.create(model="aperture/auto", messages=messages)
                    raw.parse()
                    results.append((raw.headers["x-aperture-request-id"], raw.headers["x-aperture-ruleset"],
                                    raw.headers["x-aperture-route"], with_image))
                except Exception as exc:  # any failure is the finding
                    failures.append(repr(exc))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        turn = 0

        def other(*exclude: str | None) -> str:
            nonlocal turn
            while True:
                turn += 1
                candidate = versions[turn % len(versions)]
                if candidate not in exclude:
                    return candidate

        try:
            for switch in range(100):
                p = store.pointer()
                step = switch % 5
                if step == 0:
                    store.activate(other(p.active), actor="test")
                elif step in (1, 3):
                    actions.start_canary(store, other(p.active), 0.5, db_path=stack.db, actor="test")
                elif step == 2:
                    actions.manual_promote(store, db_path=stack.db, actor="test")
                else:
                    actions.manual_rollback(store, db_path=stack.db, actor="test")
                wait_served(stack, store)
                before = len(results)
                wait_for(lambda b=before: len(results) >= b + 2, what="requests answered after the swap")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)

        assert failures == []
        assert len(results) >= 200, len(results)  # at least two answered after every swap
        assert len(store.history()) == 101  # bootstrap + 100 switches
        seen = Counter(version for _, version, _, _ in results)
        assert set(seen) == set(versions), seen
        for _, version, route, _ in results:
            assert route == expected[version]

        stack.flush()
        by_id = {rid: (version, with_image) for rid, version, _, with_image in results}
        with duckdb.connect(str(stack.db), read_only=True) as conn:
            rows = conn.execute("""
                SELECT r.request_id, r.ruleset_version, r.route, r.arm, r.status, count(i.span_id),
                       count(DISTINCT i.ruleset_version), min(i.ruleset_version), max(i.ruleset_version)
                FROM request_spans r LEFT JOIN image_spans i ON i.request_span_id = r.span_id
                GROUP BY ALL""").fetchall()
            decisions = Counter(d for (d,) in conn.execute("SELECT decision FROM rollouts").fetchall())
        assert len(rows) == len(results)
        arms: Counter[str] = Counter()
        for rid, version, route, arm, status, n_images, n_versions, lo, hi in rows:
            header_version, with_image = by_id[rid]
            assert (version, route, status) == (header_version, expected[header_version], "ok"), rid
            assert n_images == int(with_image)
            if with_image:
                assert n_versions == 1 and lo == hi == version, rid
            arms[arm] += 1
        assert set(arms) == {"active", "canary"}, arms
        assert decisions == {"start": 40, "manual_promote": 20, "manual_rollback": 20}

        # What the emulator saw matches what each request's version says, request for request.
        seen_upstream = Counter((e["model"], tuple(e["details"])) for e in stack.emulator_requests())
        wanted: Counter[tuple[str, tuple[str, ...]]] = Counter()
        for version, with_image in by_id.values():
            model, detail = expected[version].split(":")
            wanted[(model, (detail,) if with_image else ())] += 1
        assert seen_upstream == wanted
        print(f"\nhot reload: {len(results)} requests over 100 switches, 0 failed; per version {dict(seen)}; arms {dict(arms)}")
