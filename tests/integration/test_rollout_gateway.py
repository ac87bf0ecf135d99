"""Issue 7's "done when", through the real gateway on loopback: hot reload under load, refusal
of invalid versions, the /admin API, and an automatic rollback driven by real OCR, evals and
the guard."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import httpx
import openai
import pytest

from aperture.policies import ruleset_validator
from collector.store import load_references, open_store
from emulator.workload.generate import generate_item
from evals.runner import run_evals
from router.rollout import actions
from router.rollout.base import CorruptVersion, InvalidRuleset
from router.rollout.guard import Guard, GuardConfig
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
    return int(stack.app.state.gateway.policy_snapshot().generation)


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


def post(client: openai.OpenAI, messages: Any, **kw: Any) -> Any:
    """One aperture/auto request; the raw response (headers included)."""
    return client.chat.completions.with_raw_response.create(model="aperture/auto", messages=messages, **kw)


def answered(results: list[Any], more: int) -> Callable[[], bool]:
    target = len(results) + more
    return lambda: len(results) >= target


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
                    raw = post(client, messages)
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
                wait_for(answered(results, 2), what="requests answered after the swap")
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
                       count(DISTINCT i.ruleset_version), min(i.ruleset_version), max(i.ruleset_version),
                       count(i.span_id) FILTER (WHERE i.arm IS DISTINCT FROM r.arm)
                FROM request_spans r LEFT JOIN image_spans i ON i.request_span_id = r.span_id
                GROUP BY ALL""").fetchall()
            decisions = Counter(d for (d,) in conn.execute("SELECT decision FROM rollouts").fetchall())
        assert len(rows) == len(results)
        arms: Counter[str] = Counter()
        for rid, version, route, arm, status, n_images, n_versions, lo, hi, other_arm in rows:
            header_version, with_image = by_id[rid]
            assert (version, route, status) == (header_version, expected[header_version], "ok"), rid
            assert n_images == int(with_image)
            if with_image:
                assert n_versions == 1 and lo == hi == version and other_arm == 0, rid
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


# ------------------------------------------------------------------ 2. invalid versions
GOOD = route_only("good", "gpt-4o-mini", "low")
LONGER = """name: longer
claims: []
rules:
  - id: big-text
    when: {text_height_px: {gte: 20}}
    route: {model: gpt-4.1-mini, detail: low}
default:
  route: {model: gpt-4.1, detail: high}
  fallbacks:
    - {model: claude-sonnet-4-5, detail: auto}
"""
INVALID = {
    "unknown model": (route_only("x", "gpt-9-ultra", "high"), "'gpt-9-ultra' is not in the catalog"),
    "bad schema": ("name: x\nrules: [{id: a, route: {model: gpt-4o}, colour: red}]\n", "colour: Extra inputs"),
    "detail the model lacks": (route_only("x", "claude-haiku-4-5", "high"), "does not take detail"),
    "cut in half": (LONGER[: len(LONGER) // 2], "not valid YAML"),
    "cut at a line end": ("\n".join(LONGER.splitlines()[:6]) + "\n", "default: Field required"),
    "not a mapping": ("- just\n- a list\n", "mapping"),
    "empty": ("   \n", "empty"),
}


def ask(client: openai.OpenAI) -> tuple[str, str]:
    raw = post(client, image_message(data_url(page_png(64, 40, "OK"))))
    raw.parse()
    return raw.headers["x-aperture-ruleset"], raw.headers["x-aperture-route"]


def test_invalid_versions_are_never_activated(tmp_path: Path) -> None:
    with running_stack(tmp_path, overrides=FAST_POLL, rules_store=tmp_path / "rules") as stack:
        validate = ruleset_validator(stack.app.state.gateway.config)
        store = DirectoryRuleStore(tmp_path / "rules", validate=validate)
        good = store.propose(GOOD, author="test")
        store.activate(good.id, actor="test")
        wait_served(stack, store)
        client = client_for(stack)
        assert ask(client) == (good.id, "gpt-4o-mini:low")

        # Refused at the door: nothing is written, the pointer does not move.
        for name, (text, hint) in INVALID.items():
            before = (len(store.list()), store.pointer())
            with pytest.raises(InvalidRuleset) as info:
                store.propose(text, author="test", validate=validate)
            assert info.value.code == "invalid_ruleset" and info.value.problems, name
            assert hint in " ".join(info.value.problems), (name, info.value.problems)
            assert (len(store.list()), store.pointer()) == before, name

        # Stored intact, then cut in half on disk: the store refuses to switch to it …
        damaged = store.propose(LONGER, author="test")
        path = tmp_path / "rules" / "versions" / f"{damaged.id}.yaml"
        path.write_bytes(path.read_bytes()[: len(LONGER) // 2])
        for switch in (lambda: store.activate(damaged.id), lambda: store.start_canary(damaged.id, 0.5)):
            with pytest.raises(CorruptVersion) as corrupt:
                switch()
            assert corrupt.value.code == "ruleset_version_corrupt"
        assert store.pointer().active == good.id

        # … and when the pointer names it anyway (damaged after the switch was written), the
        # gateway refuses to load it, counts the failure and keeps routing with the old version.
        assert metric(stack, "aperture_ruleset_load_failures") == 0
        generation = served_generation(stack)
        store.update_pointer(lambda p: replace(p, active=damaged.id), action="activate", actor="disk",
                             reason="pointer written before the text was damaged")
        wait_for(lambda: metric(stack, "aperture_ruleset_load_failures") > 0, what="a counted load failure")
        assert served_generation(stack) == generation
        health = httpx.get(f"{stack.gateway}/healthz", timeout=10).json()
        assert health["ruleset"]["active"] == good.id
        for _ in range(5):
            assert ask(client) == (good.id, "gpt-4o-mini:low")
        time.sleep(0.1)  # several polls: the failed generation is not retried or counted again
        failures = metric(stack, "aperture_ruleset_load_failures")
        assert failures == 1

        # The operator's way out: roll back to the good version; the gateway follows again.
        store.rollback(to=good.id, actor="test")
        wait_served(stack, store)
        assert ask(client) == (good.id, "gpt-4o-mini:low")
        stack.flush()
        with duckdb.connect(str(stack.db), read_only=True) as conn:
            versions = {v for (v,) in conn.execute("SELECT DISTINCT ruleset_version FROM request_spans").fetchall()}
            image_versions = {v for (v,) in conn.execute("SELECT DISTINCT ruleset_version FROM image_spans").fetchall()}
        assert versions == image_versions == {good.id}


def test_split_sticky_by_reference_sends_each_case_to_one_arm(tmp_path: Path) -> None:
    overrides = {**FAST_POLL, "routing.sticky": "reference"}
    with running_stack(tmp_path, overrides=overrides, rules_store=tmp_path / "rules") as stack:
        store = DirectoryRuleStore(tmp_path / "rules")
        active = store.propose(route_only("a", "gpt-4o-mini", "low"), author="test")
        store.activate(active.id, actor="test")
        canary = store.propose(route_only("b", "gpt-4.1-mini", "low"), author="test")
        store.start_canary(canary.id, 0.5, actor="test")
        wait_served(stack, store)
        client = client_for(stack)
        seen: dict[str, set[str]] = {}
        for case in range(12):
            for _ in range(3):
                raw = post(client, image_message(data_url(page_png(64, 40, "OK"))),
                           extra_headers={"x-aperture-reference-id": f"case-{case}"})
                raw.parse()
                seen.setdefault(f"case-{case}", set()).add(raw.headers["x-aperture-ruleset"])
        assert all(len(versions) == 1 for versions in seen.values())  # each case: one arm, every time
        assert set().union(*seen.values()) == {active.id, canary.id}  # and the cases are split
        # /metrics counts the answers per arm, as the arms actually served them.
        served_by = {"active": 0, "canary": 0}
        for versions in seen.values():
            served_by["canary" if canary.id in versions else "active"] += 3
        for arm, n in served_by.items():
            assert metric(stack, f'aperture_requests_total{{arm="{arm}",code="200",model="{"gpt-4.1-mini" if arm == "canary" else "gpt-4o-mini"}"}}') == n


# ------------------------------------------------------------------ 3. the admin API
ADMIN_KEY = "adm-test-key"


def test_admin_api_needs_the_key_and_drives_the_rollout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APERTURE_ADMIN_KEY", ADMIN_KEY)
    with running_stack(tmp_path, rules_store=tmp_path / "rules") as stack:
        admin = httpx.Client(base_url=f"{stack.gateway}/admin", timeout=30,
                             headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        anon = httpx.Client(base_url=f"{stack.gateway}/admin", timeout=30)
        wrong = httpx.Client(base_url=f"{stack.gateway}/admin", timeout=30,
                             headers={"Authorization": "Bearer not-the-key"})
        raw = httpx.Client(base_url=f"{stack.gateway}/admin", timeout=30,  # the key without "Bearer "
                           headers={"Authorization": ADMIN_KEY})
        client = client_for(stack)
        text_headers = {"content-type": "text/plain"}
        calls: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", "/rules", {}),
            ("GET", "/rules/v0001", {}),
            ("GET", "/rules/diff", {"params": {"a": "v0001", "b": "v0001"}}),
            ("POST", "/rules/validate", {"content": GOOD, "headers": text_headers}),
            ("POST", "/rules", {"content": GOOD, "headers": text_headers}),
            ("POST", "/rules/v0001/canary", {"params": {"fraction": 0.5}}),
            ("POST", "/promote", {}),
            ("POST", "/rollback", {}),
        ]
        for method, url, kw in calls:
            for c in (anon, wrong, raw):
                r = c.request(method, url, **kw)
                assert r.status_code == 401, (method, url, r.text)
                assert r.json()["error"]["code"] == "invalid_admin_key"
        assert [v.id for v in DirectoryRuleStore(tmp_path / "rules").list()] == ["v0001"]  # nothing proposed

        listed = admin.get("/rules").json()
        assert [v["id"] for v in listed["versions"]] == ["v0001"] and listed["pointer"]["active"] == "v0001"
        assert "gpt-4o" in admin.get("/rules/v0001").json()["text"]

        checked = admin.post("/rules/validate", content=INVALID["unknown model"][0], headers=text_headers).json()
        assert checked["valid"] is False and "gpt-9-ultra" in checked["problems"][0]
        assert admin.post("/rules/validate", content=GOOD, headers=text_headers).json()["valid"] is True
        refused = admin.post("/rules", content=INVALID["cut in half"][0], headers=text_headers)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_ruleset"

        proposed = admin.post("/rules", content=GOOD, headers=text_headers, params={"note": "cheap"})
        assert proposed.status_code == 200, proposed.text
        v2 = proposed.json()["id"]
        assert v2 == "v0002" and proposed.json()["note"] == "cheap"
        shown = admin.get(f"/rules/{v2}").json()
        assert shown["text"] == GOOD and shown["version"]["parent"] == "v0001"
        diff = admin.get("/rules/diff", params={"a": "v0001", "b": v2}).json()["diff"]
        assert "+  route: {model: gpt-4o-mini, detail: low}" in diff
        missing = admin.get("/rules/v0099")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "ruleset_version_not_found"
        assert admin.post("/promote").status_code == 409  # no canary yet

        for bad in (0, 1, 1.5):
            r = admin.post(f"/rules/{v2}/canary", params={"fraction": bad})
            assert r.status_code == 400, r.text
            assert (r.json()["error"]["code"], r.json()["error"]["param"]) == ("invalid_canary_fraction", "fraction")
        r = admin.get("/rules/diff", params={"a": "v0001"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "b"
        assert r.json()["error"]["code"] == "invalid_request"
        canary = admin.post(f"/rules/{v2}/canary", params={"fraction": 0.5})
        assert canary.status_code == 200 and canary.json()["canary"] == v2
        # The endpoint reloads the gateway's policy itself: no waiting for the poller.
        routes = Counter(ask(client) for _ in range(24))
        assert set(routes) == {("v0001", "gpt-4o:high"), (v2, "gpt-4o-mini:low")}, routes

        promoted = admin.post("/promote").json()
        assert (promoted["active"], promoted["canary"]) == (v2, None)
        assert ask(client) == (v2, "gpt-4o-mini:low")
        back = admin.post("/rollback").json()
        assert back["active"] == "v0001"
        assert ask(client) == ("v0001", "gpt-4o:high")
        to = admin.post("/rollback", params={"to": v2}).json()
        assert to["active"] == v2
        assert ask(client) == (v2, "gpt-4o-mini:low")
        assert admin.post("/rollback", params={"to": "v0099"}).status_code == 404

        decisions = [row[0] for row in rollout_rows(stack.db)]
        assert decisions == ["start", "manual_promote", "manual_rollback", "manual_rollback"]
        assert [e.actor for e in DirectoryRuleStore(tmp_path / "rules").history()][1:] == ["admin-api"] * 4


# ------------------------------------------------------------------ 4. automatic rollback, end to end
SMALL_TEXT_CANARY = """name: small-text-cheap
claims: []
rules:
  - id: small-text-low
    when: {text_height_px: {lte: 14}}
    route: {model: gpt-4o-mini, detail: low}
default:
  route: {model: gpt-4o, detail: high}
"""
PAGES = [("invoice", 2), ("form", 3), ("table", 4), ("receipt", 5)]  # fine print, ≤ 800 px
BATCH = 8
MAX_BATCHES = 30


def fine_print_pages() -> list[tuple[bytes, dict[str, Any]]]:
    items = [generate_item(kind, 7, index, font_px=8, long_side=800, format="png", task="transcribe")
             for kind, index in PAGES]
    return [(item.data, item.record) for item in items]


def transcribe(client: openai.OpenAI, page: tuple[bytes, dict[str, Any]]) -> tuple[str, str]:
    data, record = page
    raw = post(
        client, image_message(data_url(data), text=record["prompt"]),
        extra_headers={"x-aperture-task": "transcribe", "x-aperture-reference-id": record["id"]},
    )
    assert raw.parse().choices[0].message.content
    return raw.headers["x-aperture-ruleset"], raw.headers["x-aperture-route"]


def test_canary_with_a_worse_route_is_rolled_back_by_evals_and_guard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("APERTURE_CACHE_DIR", str(tmp_path / "cache"))
    pages = fine_print_pages()
    overrides = {**FAST_POLL, "telemetry.capture_content": True}
    with running_stack(tmp_path, mode="vision", overrides=overrides, rules_store=tmp_path / "rules") as stack:
        store = DirectoryRuleStore(tmp_path / "rules", validate=ruleset_validator(stack.app.state.gateway.config))
        with open_store(stack.db) as conn:
            assert load_references(conn, [record for _, record in pages]) == len(pages)
        client = client_for(stack)
        assert transcribe(client, pages[0]) == ("v0001", "gpt-4o:high")  # the baseline

        candidate = store.propose(SMALL_TEXT_CANARY, author="optimizer", note="fine print at low detail")
        actions.start_canary(store, candidate.id, 0.5, db_path=stack.db, actor="optimizer")
        wait_served(stack, store)
        guard = Guard(stack.db, store, GuardConfig(evaluators=("ocr_faithfulness",)))
        sent: Counter[tuple[str, str]] = Counter()
        decision = None
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=2) as pool:
            for batch in range(MAX_BATCHES):
                order = [pages[(batch * BATCH + i) % len(pages)] for i in range(BATCH)]
                sent.update(pool.map(lambda page: transcribe(client, page), order))
                stack.app.state.telemetry.flush()
                run_evals(stack.db, evaluators=["ocr_faithfulness"], workers=1, progress=False)
                decision = guard.step()
                if decision.action != "extend":
                    break
        elapsed = time.monotonic() - started
        assert decision is not None and decision.action == "rollback", decision
        assert set(sent) == {("v0001", "gpt-4o:high"), (candidate.id, "gpt-4o-mini:low")}, sent

        pointer = store.pointer()
        assert (pointer.active, pointer.canary) == ("v0001", None)
        assert store.history()[-1].actor == "guard"
        wait_served(stack, store)
        assert stack.app.state.gateway.policy_snapshot().canary is None
        assert transcribe(client, pages[1]) == ("v0001", "gpt-4o:high")

        rows = rollout_rows(stack.db)
        assert [r[0] for r in rows][0] == "start" and [r[0] for r in rows][-1] == "rollback"
        _, cand, active, n_canary, reason, stats = rows[-1]
        assert (cand, active) == (candidate.id, "v0001") and "quality" in reason
        quality = json.loads(stats)["metrics"]["quality"]
        assert quality["mean_canary"] < quality["mean_active"] - 0.05
        assert n_canary == sent[(candidate.id, "gpt-4o-mini:low")]
        with open_store(stack.db, read_only=True) as conn:
            scored = conn.execute(
                "SELECT count(DISTINCT span_id) FROM eval_scores WHERE evaluator = 'ocr_faithfulness'"
                " AND status = 'scored'").fetchall()[0][0]
        assert scored >= sum(sent.values())
        print(f"\nrollback after {n_canary} canary requests ({sum(sent.values())} in all, "
              f"{len(pages)} distinct pages, {elapsed:.0f} s); quality canary {quality['mean_canary']:.3f} "
              f"vs active {quality['mean_active']:.3f}; reason: {reason}")
