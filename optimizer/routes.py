"""Candidate routes and their exact cost on logged images (pure, vectorised).

Cost comes from the same token functions the router prices with, over the dimensions of the
images actually logged, so a proposal's predicted image cost is exact, not modelled. Text and
output tokens, which routing does not change much, come from the logged means per route.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.policy import explore_routes
from router.rules import Target
from router.tokens import effective_size, estimate_image_tokens


@dataclass(frozen=True)
class Route:
    model: str
    detail: str

    @property
    def key(self) -> str:
        return f"{self.model}:{self.detail}"

    def target(self) -> Target:
        return Target(model=self.model, detail=self.detail)

    @classmethod
    def parse(cls, key: str) -> Route:
        model, _, detail = key.rpartition(":")
        if not model:
            raise ValueError(f"route {key!r} is not model:detail")
        return cls(model, detail.split("@", 1)[0])


def candidate_routes(catalog: Mapping[str, Any], models: Sequence[str] | None = None) -> list[Route]:
    """Every (model, detail) the optimizer may choose: the same set the router's exploration
    arm draws from (``auto`` dropped where it equals ``high``)."""
    return [Route(t.model, t.detail) for t in explore_routes(catalog, list(models or catalog))]


def _downscale(spec: Any, width: int, height: int) -> tuple[int, int]:
    side = getattr(spec.limits, "downscale_to", None)
    if side and max(width, height) > side:
        scale = side / max(width, height)
        return max(1, int(width * scale)), max(1, int(height * scale))
    return width, height


def image_tokens_matrix(
    catalog: Mapping[str, Any], routes: Sequence[Route], widths: np.ndarray, heights: np.ndarray
) -> np.ndarray:
    """tokens[r, i]: image tokens of image i on route r, as the router would estimate and the
    provider bill them (after the router's own downscale to the provider's maximum)."""
    out = np.zeros((len(routes), len(widths)), dtype=np.int64)
    cache: dict[tuple[str, str, int, int], int] = {}
    for r, route in enumerate(routes):
        spec = catalog[route.model]
        rule = spec.token_rule()
        for i, (w, h) in enumerate(zip(widths.tolist(), heights.tolist(), strict=True)):
            key = (route.model, route.detail, w, h)
            if key not in cache:
                sw, sh = _downscale(spec, int(w), int(h))
                cache[key] = estimate_image_tokens(rule, sw, sh, route.detail)
            out[r, i] = cache[key]
    return out


def effective_scale_matrix(
    catalog: Mapping[str, Any], routes: Sequence[Route], widths: np.ndarray, heights: np.ndarray
) -> np.ndarray:
    """scale[r, i]: linear scale at which route r's model sees image i (≤ 1). Text that is
    ``t`` px tall in the original is ``t × scale`` px tall for the model: the physical reason
    detail matters."""
    out = np.ones((len(routes), len(widths)), dtype=np.float64)
    for r, route in enumerate(routes):
        spec = catalog[route.model]
        rule = spec.token_rule()
        for i, (w, h) in enumerate(zip(widths.tolist(), heights.tolist(), strict=True)):
            sw, sh = _downscale(spec, int(w), int(h))
            ew, _ = effective_size(rule, sw, sh, route.detail)
            out[r, i] = ew / max(int(w), 1)
    return out


def assigned_costs(
    catalog: Mapping[str, Any],
    assigned: Sequence[Route],
    widths: np.ndarray,
    heights: np.ndarray,
    text_tokens: np.ndarray,
    output_tokens: np.ndarray,
) -> np.ndarray:
    """cost[i] in USD of request i sent on ``assigned[i]``, with its own text and output tokens."""
    routes = sorted(set(assigned), key=lambda r: r.key)
    index = {r: k for k, r in enumerate(routes)}
    tokens = image_tokens_matrix(catalog, routes, widths, heights)
    chosen = tokens[[index[r] for r in assigned], np.arange(len(assigned))]
    price_in = np.array([catalog[r.model].price.input_per_mtok for r in assigned], dtype=float)
    price_out = np.array([catalog[r.model].price.output_per_mtok for r in assigned], dtype=float)
    return ((chosen + text_tokens) * price_in + output_tokens * price_out) / 1e6


def route_costs(
    catalog: Mapping[str, Any],
    routes: Sequence[Route],
    image_tokens: np.ndarray,
    text_tokens: np.ndarray,
    output_tokens: Mapping[str, float] | float,
) -> np.ndarray:
    """cost[r, i] in USD of sending request i on route r."""
    out = np.zeros(image_tokens.shape, dtype=np.float64)
    for r, route in enumerate(routes):
        price = catalog[route.model].price
        out_tokens = output_tokens.get(route.key, 0.0) if isinstance(output_tokens, Mapping) else float(output_tokens)
        out[r] = ((image_tokens[r] + text_tokens) * price.input_per_mtok + out_tokens * price.output_per_mtok) / 1e6
    return out
