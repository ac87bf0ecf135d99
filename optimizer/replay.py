"""``aperture replay``: fill the image × route quality matrix by resending stored images.

A stratified sample of logged requests (by size bucket, text-height bucket and task) is sent
again through the gateway to every candidate route, naming the model and detail explicitly
and tagged ``x-aperture-replay: 1`` so it never counts as user traffic. Prompts come from the
captured request content and image bytes from the content-addressed blob store, so replay
needs both to have been enabled (``telemetry.capture_content`` and ``telemetry.blob_dir``).
The replayed requests are traced like any other and scored by ``aperture eval``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import polars as pl

from collector import semconv as sc
from collector.blobs import read_blob
from collector.queries.optimizer import replayable_requests
from collector.store import open_store
from optimizer.routes import Route
from router.images.sniff import sniff
from router.rules import AUTO_MODEL

# Not a route but an instruction: send the request unchanged to the gateway's rules. A replay
# always takes the active arm, so this is a shadow of the request on the active version (what
# a paired canary guard compares the canary's answer with).
ACTIVE_VERSION = Route(AUTO_MODEL, "auto")

class ReplayError(Exception):
    """Replay cannot run: the message says what is missing."""


@dataclass(frozen=True)
class ReplayItem:
    span_id: str
    sha256: str
    task: str | None
    reference_id: str | None
    messages: list[dict[str, Any]]
    route: str | None = None  # the route the original request took (already observed)


@dataclass
class ReplaySummary:
    sampled: int
    routes: list[str]
    sent: int
    failed: int
    errors: dict[str, int]


STRATA = ("_size", "_text", "task")


def with_strata(df: pl.DataFrame) -> pl.DataFrame:
    """``df`` with its replay stratum: size bucket, text-height bucket (the task is the third key)."""
    long_side = pl.max_horizontal("width", "height")
    return df.with_columns(
        pl.when(long_side <= 512).then(pl.lit("s")).when(long_side <= 1024).then(pl.lit("m")).when(long_side <= 2048).then(pl.lit("l")).otherwise(pl.lit("xl")).alias("_size"),
        pl.when(pl.col("text_height_px").is_null()).then(pl.lit("none"))
        .when(pl.col("text_height_px") < 10).then(pl.lit("<10"))
        .when(pl.col("text_height_px") < 16).then(pl.lit("10-16"))
        .when(pl.col("text_height_px") < 24).then(pl.lit("16-24")).otherwise(pl.lit(">=24")).alias("_text"),
    )


def targeted_sample(df: pl.DataFrame, observed: pl.DataFrame, savings: Mapping[str, float], n: int,
                    seed: int = 0) -> pl.DataFrame:
    """Up to ``n`` rows of ``df`` (not yet replayed) to replay next, where a replay is worth most.

    ``observed`` holds the scored rows so far (a ``route`` column and the same image columns),
    ``savings`` the cost a route saves per image against the current one (USD; routes that save
    nothing are left out). A stratum whose ``m`` images could move to route ``r``, observed ``k``
    times there, is charged about ``m / (k + 1)`` unseen failures by the optimizer's bound
    (``Matrices.unseen_loss``); one more replay there lowers that by ``m / ((k + 1)(k + 2))``.
    Greedily, each pick goes to the stratum where that drop, times the route's saving, is
    largest (a replay covers every route at once), so replays gather where content could
    decide a move that saves the most, instead of spreading evenly. Deterministic for the same
    rows (ties and order within a stratum as in :func:`stratified_sample`)."""
    routes = [r for r, v in savings.items() if v > 0]
    if df.height == 0 or n <= 0 or not routes:
        return df.head(0)
    pool = _ranked(df, seed)
    sizes = {tuple(k): v for *k, v in pool.group_by(*STRATA).len().iter_rows()}
    seen = with_strata(observed).filter(pl.col("route").is_in(routes)).group_by(*STRATA, "route").len()
    counts = {(tuple(k), r): float(v) for *k, r, v in seen.iter_rows()}
    taken = dict.fromkeys(sizes, 0)
    for _ in range(min(n, pool.height)):
        def worth(stratum: tuple[str, ...]) -> float:
            m = sizes[stratum]
            return max(savings[r] * m / ((counts.get((stratum, r), 0.0) + taken[stratum] + 1.0)
                                         * (counts.get((stratum, r), 0.0) + taken[stratum] + 2.0)) for r in routes)
        open_strata = [s for s in sizes if taken[s] < sizes[s]]
        best = max(open_strata, key=lambda s: (worth(s), s))
        taken[best] += 1
    keep = pl.DataFrame({"_size": [s[0] for s in taken], "_text": [s[1] for s in taken], "task": [s[2] for s in taken],
                         "_take": list(taken.values())}, schema_overrides={"task": pool.schema["task"]})
    return (pool.join(keep, on=list(STRATA), how="left", nulls_equal=True)
            .filter(pl.col("_rank") < pl.col("_take")).drop("_size", "_text", "_rank", "_take"))


def stratified_sample(df: pl.DataFrame, n: int, seed: int = 0) -> pl.DataFrame:
    """Up to ``n`` rows spread evenly over (size bucket, text-height bucket, task) strata.

    Reproducible for the same rows in the same order (``load_items`` sorts them by content
    first): the shuffle is seeded and ties are broken by content, never by span ids."""
    if df.height <= n:
        return df
    return _ranked(df, seed).head(n).drop("_size", "_text", "_rank")


def _ranked(df: pl.DataFrame, seed: int) -> pl.DataFrame:
    """Every row with its stratum and its seeded rank within it, the k-th of every stratum first."""
    strata = with_strata(df).sample(fraction=1.0, shuffle=True, seed=seed)
    strata = strata.with_columns(pl.int_range(pl.len()).over(*STRATA).alias("_rank"))
    # Ties (the k-th row of every stratum) are broken by content, never by span ids, which
    # differ between two runs of the same traffic: the same images give the same sample.
    return strata.sort("_rank", *STRATA, "sha256", nulls_last=True)


def load_items(
    db: str | Path, blob_dir: Path, n: int, seed: int = 0, *, span_ids: Sequence[str] | None = None
) -> list[ReplayItem]:
    """A stratified sample of ``n`` stored requests, or exactly the requests ``span_ids`` (to
    shadow what a ruleset served on another route)."""
    with open_store(db, read_only=True) as conn:
        df = replayable_requests(conn)
    df = df.sort("sha256", "task", "span_id", nulls_last=True)  # the same store samples the same images
    if span_ids is not None:
        df = df.filter(pl.col("span_id").is_in(list(span_ids)))
        n = df.height
    if df.height == 0:
        raise ReplayError(
            "no replayable requests: enable telemetry.capture_content and telemetry.blob_dir, then send traffic"
        )
    df = df.unique(subset=["sha256", "task"], keep="first", maintain_order=True)
    items = []
    for row in stratified_sample(df, n, seed).iter_rows(named=True):
        data = read_blob(blob_dir, row["sha256"])
        if data is None:
            continue
        mime = sniff(data[:65536]).mime
        url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
        messages = openai_messages(json.loads(row["input_text"]), {row["sha256"]: url})
        items.append(ReplayItem(row["span_id"], row["sha256"], row["task"], row["reference_id"], messages, row["route"]))
    if not items:
        raise ReplayError(f"the sampled images are missing from the blob store {blob_dir}")
    return items


def openai_messages(captured: list[dict[str, Any]], images: dict[str, str]) -> list[dict[str, Any]]:
    """Captured ``gen_ai.input.messages`` back to an OpenAI chat body's messages, each image whose
    sha256 is in ``images`` as that URL. Reads the conventions' parts format (``parts``, an image
    as a ``uri`` part ``sha256:<hex>``) and the OpenAI shape stores written before it
    (``content``, an image as ``{"type": "image", "sha256"}``)."""
    out = []
    for message in captured:
        parts = message.get("parts")
        if isinstance(parts, list):
            if all(isinstance(p, dict) and p.get("type") == "text" for p in parts) and len(parts) == 1:
                content: Any = parts[0].get("content", "")
            else:
                content = [_openai_part(p, images) for p in parts if isinstance(p, dict)]
        else:
            content = message.get("content")
            if isinstance(content, list):
                content = [_openai_part(p, images) if isinstance(p, dict) else p for p in content]
        out.append({"role": message.get("role", "user"), "content": content})
    return out


def _openai_part(part: dict[str, Any], images: dict[str, str]) -> dict[str, Any]:
    kind = part.get("type")
    uri = part.get("uri")
    sha = uri[len(sc.IMAGE_URI_PREFIX):] if kind == "uri" and isinstance(uri, str) and uri.startswith(sc.IMAGE_URI_PREFIX) \
        else part.get("sha256") if kind == "image" else None
    if sha is not None and sha in images:
        return {"type": "image_url", "image_url": {"url": images[sha]}}
    if kind == "text" and "content" in part:
        return {"type": "text", "text": part["content"]}
    return part


def _with_detail(messages: list[dict[str, Any]], detail: str) -> list[dict[str, Any]]:
    out = json.loads(json.dumps(messages))
    for message in out:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    part["image_url"]["detail"] = detail
    return out


def replay(
    gateway_url: str,
    items: Sequence[ReplayItem],
    routes: Sequence[Route],
    *,
    api_key: str = "replay",
    concurrency: int = 4,
    timeout_s: float = 300.0,
    progress: Callable[[int, int], None] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> ReplaySummary:
    """Send every item to every route through the gateway (explicit model and detail), except
    the route the original request already took: its answer is observed."""
    jobs = [(item, route) for item in items for route in routes if route.key != item.route]
    errors: dict[str, int] = {}
    done = 0
    client = httpx.Client(base_url=gateway_url, timeout=timeout_s, transport=transport,
                          headers={"authorization": f"Bearer {api_key}", "x-aperture-replay": "1"})

    def send(job: tuple[ReplayItem, Route]) -> str | None:
        item, route = job
        headers = {}
        if item.task:
            headers["x-aperture-task"] = item.task
        if item.reference_id:
            headers["x-aperture-reference-id"] = item.reference_id
        if route == ACTIVE_VERSION:
            body = {"model": AUTO_MODEL, "messages": item.messages}
        else:
            body = {"model": route.model, "messages": _with_detail(item.messages, route.detail)}
        try:
            r = client.post("/v1/chat/completions", json=body, headers=headers)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        if r.status_code >= 400:
            try:
                return str(r.json()["error"]["code"])
            except (ValueError, KeyError, TypeError):
                return f"http_{r.status_code}"
        return None

    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for outcome in pool.map(send, jobs):
                done += 1
                if outcome is not None:
                    errors[outcome] = errors.get(outcome, 0) + 1
                if progress is not None:
                    progress(done, len(jobs))
    finally:
        client.close()
    failed = sum(errors.values())
    return ReplaySummary(len(items), [r.key for r in routes], len(jobs) - failed, failed, errors)
