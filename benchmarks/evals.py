"""Evaluation throughput: evaluations per second per core, reference and reference-free.

Run: ``python -m benchmarks.evals [--items N] [--answers K]``.

Cases come from the synthetic workload (real documents, real images) with answers made by
corrupting the true text at a few error levels. Each case runs the three built-in
evaluators (ocr_faithfulness, field_accuracy, grounding) in this one process, so the
rates are per core. Modes:

* reference: ground truth loaded, no OCR;
* reference-free, cold: no ground truth, reference OCR runs on every distinct image
  (each image has K answers, so the OCR cost is shared by K cases as in real traffic
  where several evaluators and reruns hit the same image);
* reference-free, warm: the same cases again with the OCR disk cache filled.

Then the same answers go through ``run_evals`` over a real DuckDB store (reference mode:
selection, process pool, batched writes) with 1 and 2 workers.

Wall-clock and CPU-time rates are both printed: on a shared machine the first understates.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emulator.workload import generate_item, plan
from evals.base import EvalCase, ImageInfo, Reference, safe_evaluate
from evals.field_accuracy import FieldAccuracy
from evals.grounding import Grounding
from evals.ocr_faithfulness import OcrFaithfulness

LEVELS = (0.0, 0.05, 0.15, 0.3)
SKIP_KINDS = {"screenshot_4k", "contract"}  # huge images: they dominate OCR time; see --all-kinds


def corrupt(text: str, rate: float, rng: random.Random) -> str:
    out = []
    for ch in text:
        if ch.isspace() or rng.random() >= rate:
            out.append(ch)
        elif (op := rng.random()) < 0.33:
            continue
        elif op < 0.66:
            out.append(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789"))
        else:
            out.extend([ch, rng.choice("abcdefghijklmnopqrstuvwxyz")])
    return "".join(out)


def _loader(data: bytes) -> Callable[[], bytes]:
    return lambda: data


def build_cases(
    items: int, answers: int, seed: int, all_kinds: bool
) -> tuple[list[EvalCase], list[EvalCase]]:
    """(reference cases, reference-free cases) over the same answers."""
    rng = random.Random(seed)
    kinds = [k for k in plan(items * 3, seed) if all_kinds or k not in SKIP_KINDS][:items]
    with_ref, without = [], []
    for i, kind in enumerate(kinds):
        item = generate_item(kind, seed, i)
        rec = item.record
        ref = Reference(
            rec["id"],
            text=rec["text"],
            lines=rec["lines"],
            fields=rec["fields"],
            qa=rec["qa"],
            task=rec["task"],
        )
        image = ImageInfo(
            sha256=rec["sha256"],
            width=rec["width"],
            height=rec["height"],
            loader=_loader(item.data),
        )
        for j in range(answers):
            level = LEVELS[j % len(LEVELS)]
            if rec["task"] == "extract" and rec["qa"]:
                answer = corrupt(rec["qa"][0]["answer"], level, rng)
            else:
                answer = corrupt(rec["text"], level, rng)
            span = f"{i * answers + j + 1:016x}"
            common = dict(
                trace_id="0" * 32,
                span_id=span,
                task=rec["task"],
                prompt=rec["prompt"],
                answer=answer,
                images=(image,),
            )
            with_ref.append(EvalCase(**common, reference_id=rec["id"], reference=ref))  # type: ignore[arg-type]
            without.append(EvalCase(**common))  # type: ignore[arg-type]
    return with_ref, without


def rate(cases: list[EvalCase], cache_dir: Path) -> dict[str, float]:
    evaluators = [
        OcrFaithfulness(cache_dir=cache_dir),
        FieldAccuracy(),
        Grounding(cache_dir=cache_dir),
    ]
    wall, cpu = time.perf_counter(), time.process_time()
    n = 0
    for case in cases:
        for ev in evaluators:
            n += len(safe_evaluate(ev, case))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "evaluations": n,
        "wall_s": wall,
        "cpu_s": cpu,
        "per_s_wall": n / wall,
        "per_s_cpu": n / max(cpu, 1e-9),
    }


def store_rate(cases: list[EvalCase], tmp: Path, workers: int) -> dict[str, float]:
    """Evaluations per second of ``run_evals`` over a store holding ``cases`` as spans."""
    from collector.semconv import utc_now
    from collector.store import insert_rows, load_references, open_store
    from evals.runner import run_evals

    db = tmp / f"runner-{workers}.duckdb"
    now = utc_now()
    refs: dict[str, dict[str, Any]] = {}
    req = []
    for i, c in enumerate(cases):
        assert c.reference is not None
        r = c.reference
        refs[r.reference_id] = {
            "id": r.reference_id,
            "task": r.task,
            "text": r.text,
            "lines": r.lines,
            "fields": r.fields,
            "qa": r.qa,
        }
        prompt = json.dumps([{"role": "user", "parts": [{"type": "text", "content": c.prompt}]}])
        req.append(
            {
                "trace_id": f"{i + 1:032x}",
                "span_id": c.span_id,
                "ts": now,
                "task": c.task,
                "status": "ok",
                "reference_id": r.reference_id,
                "input_text": prompt,
                "output_text": c.answer,
            }
        )
    with open_store(db) as conn:
        insert_rows(conn, "request_spans", req)
        load_references(conn, list(refs.values()))
    wall = time.perf_counter()
    summary = run_evals(db, workers=workers, progress=False, blob_dir=None)
    wall = time.perf_counter() - wall
    return {"evaluations": summary.written, "wall_s": wall, "per_s_wall": summary.written / wall}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=12, help="distinct workload images")
    p.add_argument("--answers", type=int, default=4, help="simulated answers per image")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--all-kinds", action="store_true", help="include 4k screenshots and contracts")
    args = p.parse_args(argv)
    with_ref, without = build_cases(args.items, args.answers, args.seed, args.all_kinds)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        results["reference"] = rate(with_ref, cache)
        results["reference_free_cold"] = rate(without, cache)
        results["reference_free_warm"] = rate(without, cache)
        for workers in (1, 2):
            results[f"run_evals_{workers}_worker"] = store_rate(with_ref, cache, workers)
    print(
        f"{len(with_ref)} cases over {args.items} images, 3 evaluators each, one process (per core)"
    )
    for mode, r in results.items():
        cpu = f"{r['per_s_cpu']:9.1f}/s cpu" if "per_s_cpu" in r else " " * 15
        print(
            f"{mode:22s} {r['evaluations']:5.0f} evaluations  {r['per_s_wall']:9.1f}/s wall"
            f"  {cpu}  ({r['wall_s']:.2f}s)"
        )
    return results


if __name__ == "__main__":
    main()
