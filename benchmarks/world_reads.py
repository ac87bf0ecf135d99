"""Every image on every route in one world, in-process: answer, score and exact cost per cell.

The emulator's answerer (real OCR, disk-cached by pixels, so worlds share their OCR) reads
each workload image at the size the route's provider would deliver, the world applies its
misreads, and the built-in evaluators score the answer against the workload's ground truth,
as the demo's ``aperture eval`` would. Costs follow the router's token math and the catalog's
prices. Used by ``benchmarks.regret``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from emulator.engine import AnswerRequest, SeenImage, VisionAnswerer
from emulator.models import ModelEntry
from emulator.protocols.common import output_tokens
from emulator.worlds import World
from evals.base import EvalCase, Evaluator, NotEvaluable, Reference
from evals.field_accuracy import FieldAccuracy
from evals.grounding import Grounding
from evals.ocr_faithfulness import OcrFaithfulness
from optimizer.routes import Route, image_tokens_matrix
from router.images.features import estimate_text_height
from router.images.sniff import sniff
from router.tokens import effective_size


@dataclass(frozen=True)
class Item:
    """One workload image with the features the router sees."""

    record: dict[str, Any]
    data: bytes
    text_height: float  # router's estimate in original px (NaN: none)

    @property
    def long_side(self) -> int:
        return max(self.record["width"], self.record["height"])

    @property
    def permille(self) -> float:
        return self.text_height * 1000.0 / max(self.long_side, 1)


def load_items(records: Sequence[dict[str, Any]], images: Mapping[str, bytes]) -> list[Item]:
    out = []
    for r in records:
        data = images[r["id"]]
        est = estimate_text_height(data, sniff(data))
        out.append(Item(r, data, float("nan") if est is None else float(est)))
    return out


def evaluators() -> dict[str, Evaluator]:
    return {"transcribe": OcrFaithfulness(), "extract": FieldAccuracy(), "describe": Grounding()}


def score(task: str, prompt: str, answer: str, record: dict[str, Any], judges: Mapping[str, Evaluator]) -> float:
    """The task's evaluator score against the ground truth; NaN when not evaluable."""
    ref = Reference(record["id"], text=record["text"], lines=record["lines"], fields=record["fields"],
                    qa=record["qa"], kind=record["kind"], task=task, image_sha256=record["sha256"])
    case = EvalCase("t", "s", task=task, prompt=prompt, answer=answer, reference_id=record["id"], reference=ref)
    try:
        scores = judges[task].evaluate(case)
    except NotEvaluable:
        return float("nan")
    return float(scores[0].value) if scores and scores[0].value is not None else float("nan")


class WorldReader:
    """Reads (item, route) cells in one world; each cell once."""

    def __init__(self, world: World, models: Mapping[str, ModelEntry], catalog: Mapping[str, Any],
                 workers: int = 2) -> None:
        self.world, self.models, self.catalog, self.workers = world, models, catalog, workers
        self.answerer = VisionAnswerer(world=world)
        self.judges = evaluators()
        self._cells: dict[tuple[str, str], tuple[float, str]] = {}

    def _read(self, item: Item, route: Route) -> tuple[float, str]:
        rec, entry = item.record, self.models[route.model]
        w, h = rec["width"], rec["height"]
        seen = SeenImage(hashlib.sha256(item.data).hexdigest(), item.data, rec["format"], w, h, route.detail,
                         effective_size(entry.rule, w, h, route.detail), 0)
        answer = self.answerer.answer(AnswerRequest(route.model, entry.profile, rec["task"], rec["prompt"], (seen,)))
        return score(rec["task"], rec["prompt"], answer, rec, self.judges), answer

    def read_all(self, items: Sequence[Item], routes: Sequence[Route]) -> None:
        todo = [(i, r) for i in items for r in routes if (i.record["id"], r.key) not in self._cells]
        with ThreadPoolExecutor(self.workers) as pool:
            for (i, r), cell in zip(todo, pool.map(lambda c: self._read(*c), todo), strict=True):
                self._cells[(i.record["id"], r.key)] = cell

    def matrices(self, items: Sequence[Item], routes: Sequence[Route]) -> tuple[np.ndarray, np.ndarray]:
        """quality[r, i] and cost[r, i] (USD) after reading every missing cell."""
        self.read_all(items, routes)
        widths = np.array([i.record["width"] for i in items])
        heights = np.array([i.record["height"] for i in items])
        tokens = image_tokens_matrix(self.catalog, routes, widths, heights)
        quality = np.zeros((len(routes), len(items)))
        cost = np.zeros((len(routes), len(items)))
        for r, route in enumerate(routes):
            price = self.catalog[route.model].price
            for k, item in enumerate(items):
                q, answer = self._cells[(item.record["id"], route.key)]
                quality[r, k] = q
                text = output_tokens(item.record["prompt"]) + 10
                cost[r, k] = ((tokens[r, k] + text) * price.input_per_mtok + output_tokens(answer) * price.output_per_mtok) / 1e6
        return quality, cost
