"""A realistic store for analysis tests and notebooks, written through the real span writer.

``build_demo_like_store(path)`` emits request spans ``chat {model}`` with child ``image`` and
``upstream {provider}`` spans through an OTel SDK ``TracerProvider`` + ``BatchSpanProcessor`` +
``collector.exporter.DuckDBSpanExporter``, so the typed tables are filled by the same mapping
the gateway uses. Traffic spans five days, four models, three teams, every detail level, all
size buckets, the active/canary/explore arms and three ruleset versions. Evaluation scores,
failure clusters and rollout decisions are then added with ``insert_rows``, keyed on the
request spans the writer actually stored.

Everything is drawn from ``random.Random(seed)`` (span ids included), so one seed gives one
store.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Status, StatusCode, set_span_in_context

from collector.exporter import DuckDBSpanExporter
from collector.semconv import semconv_provider_name
from collector.store import fetch_df, insert_rows, open_store

START = datetime(2026, 5, 4, 0, 0, 0)  # naive UTC, like every store timestamp
DAYS = 5
_EPOCH = datetime(1970, 1, 1)


@dataclass(frozen=True)
class FixtureModel:
    name: str
    provider: str
    input_per_mtok: float
    output_per_mtok: float
    rule: str  # tile | claude | flat


MODELS = (
    FixtureModel("gpt-4o", "openai", 2.50, 10.00, "tile"),
    FixtureModel("gpt-4o-mini", "openai", 0.15, 0.60, "tile_mini"),
    FixtureModel("claude-sonnet-4-5", "anthropic", 3.00, 15.00, "claude"),
    FixtureModel("gemini-2.5-flash", "gemini", 0.30, 2.50, "flat"),
)
TEAMS = ("search", "docs", "support")
TASKS = ("ocr", "caption", "extract")
SIZES = ((400, 300), (800, 600), (1024, 768), (1700, 2200), (2480, 3508), (4032, 3024))


class SeededIds(IdGenerator):
    """Span and trace ids from a seeded generator, so the store is reproducible."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1


def image_tokens(model: FixtureModel, width: int, height: int, detail: str) -> int:
    """Image tokens by the providers' published rules (simplified, enough for a fixture)."""
    if model.rule == "flat":
        return 258
    if model.rule == "claude":
        scale = min(1.0, 1568 / max(width, height))
        return min(1568, math.ceil(width * scale * height * scale / 750))
    base, tile = (2833, 5667) if model.rule == "tile_mini" else (85, 170)
    if detail == "low":
        return base
    scale = min(1.0, 2048 / max(width, height))
    w, h = width * scale, height * scale
    scale = min(1.0, 768 / min(w, h))
    w, h = w * scale, h * scale
    return base + tile * math.ceil(w / 512) * math.ceil(h / 512)


def _ns(ts: datetime) -> int:
    return int((ts - _EPOCH).total_seconds() * 1e9)


def _ruleset(day: int) -> tuple[str, str]:
    """(active, canary) version on a given day: v0002 is promoted on day 3, v0003 rolled back."""
    return ("v0001", "v0002") if day < 3 else ("v0002", "v0003")


def _emit_request(tracer: Any, rng: random.Random, ts: datetime, n: int) -> None:
    day = (ts - START).days
    active, canary = _ruleset(day)
    draw = rng.random()
    arm = "active" if draw < 0.8 else ("canary" if draw < 0.95 else "explore")
    version = canary if arm == "canary" else active
    model = rng.choice(MODELS)
    detail = "auto" if model.rule == "claude" else rng.choice(("low", "high", "high", "auto"))
    team = rng.choice(TEAMS)
    task = rng.choice(TASKS)
    propensity = 1.0 if arm != "explore" else round(rng.uniform(0.05, 0.3), 3)
    failed = rng.random() < 0.06
    retries = rng.choice((0, 0, 0, 1)) if not failed else 2
    request_id = f"req-{n:05d}"
    route = f"{model.name}:{detail}"
    common = {
        "gen_ai.provider.name": semconv_provider_name(model.provider),
        "aperture.provider": model.provider,
        "gen_ai.request.model": model.name,
        "aperture.team": team,
        "aperture.ruleset.version": version,
        "aperture.ruleset.arm": arm,
        "aperture.rule.id": f"r-{detail}-{model.provider}",
        "aperture.requested_model": "aperture/auto" if rng.random() < 0.85 else model.name,
        "aperture.task": task,
        "aperture.reference_id": f"ref-{n % 40:03d}",
        "aperture.request_id": request_id,
        "aperture.route.propensity": propensity,
    }
    duration = timedelta(milliseconds=rng.uniform(300, 4000))
    n_images = rng.choice((1, 1, 1, 2, 3))
    output_tokens = rng.randint(40, 600)
    images: list[dict[str, Any]] = []
    for index in range(n_images):
        width, height = rng.choice(SIZES)
        estimated = image_tokens(model, width, height, detail)
        low = image_tokens(model, width, height, "low")
        billed = None if failed else max(1, round(estimated * rng.uniform(0.96, 1.06)))
        attrs: dict[str, Any] = {
            **common,
            "image.index": index,
            "image.sha256": hashlib.sha256(f"img-{n}-{index}".encode()).hexdigest(),
            "image.bytes": int(width * height * rng.uniform(0.08, 0.5)),
            "image.width": width,
            "image.height": height,
            "image.format": rng.choice(("png", "jpeg", "jpeg", "webp")),
            "image.source": rng.choice(("base64", "base64", "url")),
            "image.detail": detail,
            "image.tokens_estimated": estimated,
            "aperture.image.tokens_low_estimate": low,
            "aperture.image.text_height_px": round(rng.choice((6.0, 11.0, 16.0, 24.0, 40.0)) * rng.uniform(0.8, 1.2), 1),
        }
        if billed is not None:
            attrs["image.tokens_billed"] = billed
            attrs["image.cost_usd"] = billed * model.input_per_mtok / 1e6
        if rng.random() < 0.1:
            attrs["image.transcoded_from"] = "heic"
        if max(width, height) > 2048 and model.rule != "flat":
            attrs["image.resized_to"] = "2048x1536"
        images.append(attrs)
    billed_images = sum(i.get("image.tokens_billed", 0) for i in images)
    text_tokens = rng.randint(20, 300)
    est_cost = (sum(i["image.tokens_estimated"] for i in images) + text_tokens) * model.input_per_mtok / 1e6 + output_tokens * model.output_per_mtok / 1e6
    request_attrs: dict[str, Any] = {
        **common,
        "gen_ai.operation.name": "chat",
        "aperture.route": route,
        "aperture.retry_count": retries,
        "aperture.image_count": n_images,
        "aperture.replay": False,
        "aperture.cost.estimated_usd": est_cost,
        "aperture.fallback_path": route if retries < 2 else f"{route}>gpt-4o-mini:low",
    }
    if failed:
        request_attrs["error.type"] = rng.choice(("upstream_rate_limited", "upstream_overloaded", "upstream_timeout"))
    else:
        request_attrs.update({
            "gen_ai.response.model": model.name,
            "gen_ai.usage.input_tokens": billed_images + text_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "aperture.cost.billed_usd": (billed_images + text_tokens) * model.input_per_mtok / 1e6 + output_tokens * model.output_per_mtok / 1e6,
        })
    start = _ns(ts)
    span = tracer.start_span(f"chat {model.name}", start_time=start, attributes=request_attrs)
    ctx = set_span_in_context(span)
    for attrs in images:
        child = tracer.start_span("image", context=ctx, start_time=start + 1_000_000, attributes=attrs)
        child.end(end_time=start + 5_000_000)
    step = int(duration.total_seconds() * 1e9) // (retries + 1)
    for attempt in range(retries + 1):
        last = attempt == retries
        ok = last and not failed
        status = 200 if ok else rng.choice((429, 503, 504))
        up_attrs: dict[str, Any] = {"aperture.attempt": attempt + 1, "http.response.status_code": status, "gen_ai.provider.name": semconv_provider_name(model.provider)}
        error_type = None if ok else {429: "upstream_rate_limited", 503: "upstream_overloaded", 504: "upstream_timeout"}[status]
        if error_type:
            up_attrs["error.type"] = error_type
        up = tracer.start_span(f"upstream {model.provider}", context=ctx, start_time=start + attempt * step + 6_000_000, attributes=up_attrs)
        if error_type:
            up.set_status(Status(StatusCode.ERROR, error_type))
        up.end(end_time=start + (attempt + 1) * step)
    if failed:
        span.set_status(Status(StatusCode.ERROR, request_attrs["error.type"]))
    span.end(end_time=start + int(duration.total_seconds() * 1e9) + 7_000_000)


def _eval_rows(requests: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    rows = []
    for r in requests:
        if r["status"] != "ok":
            continue
        model, _, detail = (r["route"] or ":").partition(":")
        base = {"low": 0.62, "auto": 0.84, "high": 0.9}.get(detail, 0.8) - (0.12 if "mini" in model else 0.0)
        if r["ruleset_version"] == "v0003":
            base -= 0.15  # the version the guard rolls back
        ts = r["ts"] + timedelta(minutes=10)
        if rng.random() < 0.08:
            rows.append({"trace_id": r["trace_id"], "span_id": r["span_id"], "evaluator": "ocr_faithfulness", "evaluator_version": "1",
                         "status": "not_evaluable", "explanation": "no reference text", "ts": ts})
            continue
        score = min(1.0, max(0.0, rng.gauss(base, 0.08)))
        rows.append({"trace_id": r["trace_id"], "span_id": r["span_id"], "evaluator": "ocr_faithfulness", "evaluator_version": "1",
                     "status": "scored", "score": score, "passed": score >= 0.7,
                     "explanation": f"character F1 {score:.2f}", "details": {"cer": round(1 - score, 3)}, "ts": ts})
        if r["task"] == "extract":
            g = min(1.0, max(0.0, rng.gauss(base + 0.05, 0.06)))
            rows.append({"trace_id": r["trace_id"], "span_id": r["span_id"], "evaluator": "field_accuracy", "evaluator_version": "1",
                         "status": "scored", "score": g, "passed": g >= 0.8, "explanation": "fields matched", "ts": ts})
    return rows


def _cluster_rows(failed_span_ids: list[str]) -> list[dict[str, Any]]:
    first, last = START + timedelta(hours=2), START + timedelta(days=DAYS - 1, hours=20)
    specs = [
        ("small text read at low detail", "rising", "route text_height<12px to high detail", "gpt-4o:high", 0.0021),
        ("mini model misses dense tables", "flat", "send tables to gpt-4o", "gpt-4o:auto", 0.0013),
        ("v0003 canary regressions", "new", "roll back v0003", None, None),
    ]
    rows = []
    for run, created in (("run-0001", START + timedelta(days=2)), ("run-0002", START + timedelta(days=DAYS))):
        for cid, (label, trend, fix, route, delta) in enumerate(specs):
            examples = failed_span_ids[cid::3][:5]
            rows.append({"run_id": run, "cluster_id": cid, "created_at": created, "evaluator": "ocr_faithfulness", "label": label,
                         "size": max(1, len(failed_span_ids[cid::3]) - (3 if run == "run-0001" else 0)),
                         "example_span_ids": examples, "first_seen": first, "last_seen": last, "trend": trend,
                         "suggested_fix": fix, "fix_route": route, "fix_cost_delta_usd": delta,
                         "features": {"text_height_px": 9.5 if cid == 0 else None}})
    return rows


def _rollout_rows() -> list[dict[str, Any]]:
    def row(day: float, rid: str, cand: str, act: str, decision: str, frac: float, nc: int, na: int, reason: str) -> dict[str, Any]:
        return {"ts": START + timedelta(days=day), "rollout_id": rid, "candidate_version": cand, "active_version": act,
                "decision": decision, "fraction": frac, "n_canary": nc, "n_active": na,
                "statistics": {"delta_quality": 0.01 if cand == "v0002" else -0.14}, "reason": reason}

    return [
        row(0.0, "ro-1", "v0002", "v0001", "start", 0.15, 0, 0, "optimizer candidate"),
        row(1.5, "ro-1", "v0002", "v0001", "extend", 0.15, 14, 70, "not enough canary traffic yet"),
        row(3.0, "ro-1", "v0002", "v0001", "promote", 0.15, 30, 150, "quality held, cost -18%"),
        row(3.0, "ro-2", "v0003", "v0002", "start", 0.15, 0, 0, "optimizer candidate"),
        row(4.6, "ro-2", "v0003", "v0002", "rollback", 0.15, 22, 95, "ocr_faithfulness fell 0.14 below active"),
    ]


def build_demo_like_store(path: str | Path, n_requests: int = 200, seed: int = 0) -> Path:
    """Write a store like the one ``aperture demo`` leaves behind; return its path."""
    path = Path(path)
    rng = random.Random(seed)
    exporter = DuckDBSpanExporter(path)
    provider = TracerProvider(resource=Resource.create({"service.name": "aperture-gateway"}), id_generator=SeededIds(random.Random(seed + 1)))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    tracer = provider.get_tracer("aperture.router")
    span_seconds = DAYS * 86400
    times = sorted(START + timedelta(seconds=rng.uniform(0, span_seconds)) for _ in range(n_requests))
    for n, ts in enumerate(times):
        _emit_request(tracer, rng, ts, n)
    provider.force_flush()
    provider.shutdown()
    if exporter.dropped:
        raise RuntimeError(f"fixture lost {exporter.dropped} spans")
    with open_store(path) as conn:
        requests = fetch_df(conn, "SELECT trace_id, span_id, ts, status, route, ruleset_version, task FROM request_spans ORDER BY ts").to_dicts()
        evals = _eval_rows(requests, rng)
        insert_rows(conn, "eval_scores", evals)
        failed = [e["span_id"] for e in evals if e.get("passed") is False]
        insert_rows(conn, "failure_clusters", _cluster_rows(failed))
        insert_rows(conn, "rollouts", _rollout_rows())
    return path
