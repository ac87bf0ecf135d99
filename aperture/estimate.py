"""``aperture estimate``: tokens and cost of one image on one model, from its header alone."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from router.config import load_config
from router.tokens import cost_usd, effective_size, estimate_image_tokens

_SIZE = re.compile(r"^(\d+)\s*[xX×]\s*(\d+)$")


def image_size(image: str) -> tuple[int, int, str | None]:
    """``WxH`` or a file whose header we sniff (pixels are never decoded)."""
    match = _SIZE.match(image.strip())
    if match:
        return int(match.group(1)), int(match.group(2)), None
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"{image!r} is neither WIDTHxHEIGHT nor a readable file")
    from router.images.sniff import sniff

    with path.open("rb") as fh:
        header = sniff(fh.read())
    return header.width, header.height, header.format


def estimate_image(image: str, *, model: str, detail: str, config_path: Path, output_tokens: int = 0) -> dict[str, Any]:
    cfg = load_config(config_path)
    spec = cfg.models.get(model)
    if spec is None:
        raise ValueError(f"unknown model {model!r}; the catalog has: {', '.join(cfg.models)}")
    if detail not in spec.details:
        raise ValueError(f"model {model!r} takes detail {spec.details}, not {detail!r}")
    width, height, fmt = image_size(image)
    rule = spec.token_rule()
    tokens = estimate_image_tokens(rule, width, height, detail)
    seen = effective_size(rule, width, height, detail)
    return {
        "model": model,
        "detail": detail,
        "width": width,
        "height": height,
        "format": fmt,
        "rule": rule.algo,
        "model_sees": f"{seen[0]}x{seen[1]}",
        "image_tokens": tokens,
        "cost_usd": round(cost_usd(tokens, output_tokens, spec.price.input_per_mtok, spec.price.output_per_mtok), 8),
        "price_input_per_mtok": spec.price.input_per_mtok,
    }
