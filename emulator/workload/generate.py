"""Generate a deterministic synthetic image workload with ground truth.

    >>> records = generate_workload(20, seed=7, out_dir=Path("wl"))   # doctest: +SKIP
    >>> records[0]["id"], records[0]["kind"]                           # doctest: +SKIP
    ('wl-s7-00001', 'invoice')

Every item draws from its own RNG seeded by (seed, index), so item i is the same whatever
n is and whichever other items are generated. That is also what makes `workers=2` safe:
items are drawn in worker processes and written in index order, byte for byte the same as
with one worker.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from collector.semconv import TASKS
from emulator.workload import effects
from emulator.workload.encode import EXTENSIONS, FORMATS, encode
from emulator.workload.fields import FIELDS
from emulator.workload.render import MAX_SIDE, cap_height, margin, render
from emulator.workload.spec import (
    DEFAULT_MIX,
    KINDS,
    PROMPTS,
    TASK_MIX,
    allocate,
    check_mix,
    weighted,
)

GENERATOR_VERSION = 2  # 2: faster encoder presets and float32 noise (new bytes)
OVERRIDABLE = {"format", "task", "field", "font_px", "long_side", "quality", "builder"}


@dataclass(frozen=True)
class GeneratedItem:
    image: Image.Image
    data: bytes
    record: dict[str, Any]


def item_id(seed: int, index: int) -> str:
    return f"wl-s{seed}-{index:05d}"


def _target(rng: random.Random, long_side: int, aspect: float) -> tuple[int, int]:
    if aspect >= 1:
        return long_side, max(1, round(long_side / aspect))
    return max(1, round(long_side * aspect)), long_side


def _draw(effect: str | None, builder: Any, rng: random.Random, nprng: np.random.Generator,
          target: tuple[int, int], font_px: int, params: dict[str, Any]) -> tuple[Image.Image, Any, Any, int]:
    """The document drawn and photographed (a sign) or scanned: (image, rendered, doc, row budget).
    Draws from ``rng`` in a fixed order, so a (seed, index) always gives the same image."""
    if effect == "sign":
        budget = rng.choice((1, 2, 2, 3, 3, 3))
        doc = builder(rng, budget)
        plate = render(doc, font_px, (0, 0))
        size = (max(target[0], round(plate.image.width / 0.8)),
                max(target[1], round(plate.image.height / 0.8)))
        angle, blur, sigma = rng.uniform(-4, 4), rng.uniform(0.3, 1.2), rng.uniform(4, 12)
        params.update(angle=round(angle, 3), blur=round(blur, 3), noise_sigma=round(sigma, 3))
        return effects.sign_photo(plate.image, size, nprng, angle, blur, sigma), plate, doc, budget
    line_h = font_px * 1.6
    budget = max(4, int((target[1] - 2 * margin(font_px, target[0])) / line_h))
    doc = builder(rng, budget)
    rendered = render(doc, font_px, target)
    image = rendered.image
    if effect == "scan":
        angle = rng.choice((-1, 1)) * rng.uniform(0.7, 4.0)
        sigma, gray = rng.uniform(4, 10), rng.random() < 0.5
        image = effects.scan(image, nprng, angle, sigma, gray)
        params.update(angle=round(angle, 3), noise_sigma=round(sigma, 3), grayscale=gray)
    return image, rendered, doc, budget


def _choose_task(kind: str, rng: random.Random, overrides: dict[str, Any], qa: list[dict[str, Any]],
                 params: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The item's task (an extract item asks its first question), and its questions in order."""
    task = overrides.get("task", weighted(rng, TASK_MIX))
    if task == "extract":
        if not qa:
            task = "transcribe"
        else:
            want = overrides.get("field") or rng.choice(qa)["field"]
            asked = [q for q in qa if q["field"] == want]
            if not asked:
                raise ValueError(f"field {want!r} is not on this {kind}; has {[q['field'] for q in qa]}")
            qa = asked + [q for q in qa if q["field"] != want]
            params["ask_field"] = want
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}")
    return task, qa


def generate_item(kind: str, seed: int, index: int, **overrides: Any) -> GeneratedItem:
    """One image and its ground-truth record. `overrides` pin parameters (format, task, field,
    font_px, long_side, quality, builder) that are otherwise drawn from the kind's ranges."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; known: {sorted(KINDS)}")
    bad = sorted(set(overrides) - OVERRIDABLE)
    if bad:
        raise ValueError(f"unknown overrides {bad}; allowed: {sorted(OVERRIDABLE)}")
    spec = KINDS[kind]
    rng = random.Random(f"aperture-workload:{seed}:{index}")
    nprng = np.random.default_rng([seed, index])
    b_i = overrides.get("builder", rng.randrange(len(spec.builders)))
    builder = spec.builders[b_i]
    long_side = int(overrides.get("long_side", rng.randint(*spec.long_side)))
    aspect = rng.uniform(*spec.aspect)
    font_px = int(overrides.get("font_px", rng.randint(*spec.font_px)))
    fmt = overrides.get("format", weighted(rng, spec.formats))
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; known: {FORMATS}")
    quality = int(overrides.get("quality", rng.randint(78, 92)))
    target = _target(rng, long_side, aspect)
    params: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION, "kind": kind, "builder": builder.__name__,
        "target_size": list(target), "aspect": round(aspect, 4), "font_px": font_px,
        "format": fmt, "quality": quality, "text_height_metric": "cap_height",
    }

    image, rendered, doc, budget = _draw(spec.effect, builder, rng, nprng, target, font_px, params)
    if max(image.size) > MAX_SIDE:
        raise ValueError(f"{kind} item {index} came out {image.size}, over {MAX_SIDE}px")
    params["row_budget"] = budget
    sizes = [i.size for r in rendered.rows for i in r.items]
    params["heading_px"], params["smallest_px"] = max(sizes), min(sizes)
    params["line_spacing"] = doc.line_spacing

    text = "\n".join(rendered.lines)
    fields = {k: v for k, v in doc.fields.items() if v in text}
    qa = [{"question": FIELDS[k].question, "answer": v, "field": k}
          for k, v in fields.items() if k in FIELDS]
    task, qa = _choose_task(kind, rng, overrides, qa, params)
    prompt = qa[0]["question"] if task == "extract" else PROMPTS[task]

    data = encode(image, fmt, quality)
    rid = item_id(seed, index)
    record = {
        "id": rid, "file": f"images/{rid}.{EXTENSIONS[fmt]}", "kind": kind, "task": task,
        "format": fmt, "width": image.width, "height": image.height, "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(), "font_px": font_px,
        "text_height_px": cap_height(font_px), "lines": rendered.lines, "text": text,
        "fields": fields, "qa": qa, "prompt": prompt, "clean": spec.clean, "params": params,
        "seed": seed,
    }
    return GeneratedItem(image, data, record)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def plan(n: int, seed: int, mix: dict[str, float] | None = None) -> list[str]:
    """The kind of each item: exact counts from the mix, in a seeded shuffled order."""
    if n < 0:
        raise ValueError("n must be >= 0")
    kinds = allocate(n, check_mix(dict(mix) if mix is not None else DEFAULT_MIX))
    random.Random(f"aperture-workload-plan:{seed}").shuffle(kinds)
    return kinds


def _write_item(job: tuple[str, int, int, str]) -> dict[str, Any]:
    """Generate item `index` and write its image; runs in a worker process or inline."""
    kind, seed, index, out_dir = job
    item = generate_item(kind, seed, index)
    _atomic_write(Path(out_dir) / item.record["file"], item.data)
    return item.record


def _records(jobs: list[tuple[str, int, int, str]], workers: int) -> Iterator[dict[str, Any]]:
    if workers <= 1 or len(jobs) < 2:
        yield from map(_write_item, jobs)
        return
    # spawn, not fork: callers (the demo) may already run threads, which fork does not copy
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
        # map keeps index order; small chunks keep both workers busy to the end
        yield from pool.map(_write_item, jobs, chunksize=2)


def generate_workload(n: int, seed: int, out_dir: Path, mix: dict[str, float] | None = None, *,
                      workers: int = 1, progress: Callable[[int], None] | None = None
                      ) -> list[dict[str, Any]]:
    """Write `out_dir/images/<id>.<ext>` and `out_dir/ground_truth.jsonl`; return the records.

    `workers` > 1 draws items in that many processes (output identical to `workers=1`);
    `progress(k)` is called with k=1 after each item is written."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    out_dir = Path(out_dir)
    images = out_dir / "images"
    images.mkdir(parents=True, exist_ok=True)
    jobs = [(kind, seed, i, str(out_dir)) for i, kind in enumerate(plan(n, seed, mix), start=1)]
    records = []
    for record in _records(jobs, workers):
        records.append(record)
        if progress is not None:
            progress(1)
    body = "".join(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n" for r in records)
    _atomic_write(out_dir / "ground_truth.jsonl", body.encode("utf-8"))
    return records


def load_ground_truth(path: Path) -> list[dict[str, Any]]:
    """Records from a workload directory or from its ground_truth.jsonl file."""
    path = Path(path)
    if path.is_dir():
        path = path / "ground_truth.jsonl"
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]
