"""Reference OCR: what the image says, read by a local model at full resolution.

Reference-free evaluation needs evidence of the image's text when no ground truth was
loaded. rapidocr (PP-OCR ONNX weights shipped in the wheel) reads the stored bytes at their
native resolution (capped at ``max_side`` px), so the evidence is as good as the image
allows regardless of the detail level the routed model saw. Results are cached on disk by
the image's sha256, because the same image is evaluated by several evaluators, reruns and
worker processes, and OCR is by far the slowest step.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_VERSION = "1"


def default_cache_dir() -> Path:
    root = os.environ.get("APERTURE_CACHE_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "aperture"
    return base / "refocr"


@dataclass(frozen=True)
class OcrText:
    """Recognised lines, top to bottom, with their recogniser confidence."""

    lines: tuple[str, ...]
    scores: tuple[float, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class ReferenceOcr:
    """rapidocr behind a content-addressed disk cache.

    The engine is built on first use (one onnxruntime thread, so parallelism comes from
    worker processes). ``ReferenceOcr(cache_dir=None)`` uses ``$APERTURE_CACHE_DIR/refocr``
    or ``~/.cache/aperture/refocr``.

    >>> ocr = ReferenceOcr()                       # doctest: +SKIP
    >>> ocr.read(png_bytes).text                    # doctest: +SKIP
    'Invoice 12345'
    """

    def __init__(self, cache_dir: Path | None = None, *, max_side: int = 2000) -> None:
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.max_side = max_side
        self._engine: Any = None
        self._lock = threading.Lock()

    @property
    def cache_dir(self) -> Path:
        # Resolved per use when not given, so APERTURE_CACHE_DIR set after construction
        # (a long-lived registry instance) is honoured.
        return self._cache_dir if self._cache_dir is not None else default_cache_dir()

    def __getstate__(self) -> dict[str, Any]:
        return {"cache_dir": self._cache_dir, "max_side": self.max_side}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["cache_dir"], max_side=state["max_side"])  # type: ignore[misc]

    def _cache_path(self, sha: str) -> Path:
        return self.cache_dir / f"v{CACHE_VERSION}-{self.max_side}" / sha[:2] / f"{sha}.json"

    def _build(self) -> Any:
        from rapidocr import RapidOCR

        return RapidOCR(
            params={
                "Global.log_level": "error",
                # "max" + a large side keeps the image at native resolution: the
                # default ("min", 736) upscales small images and costs 10-20x the time.
                "Det.limit_type": "max",
                "Det.limit_side_len": self.max_side,
                "EngineConfig.onnxruntime.intra_op_num_threads": 1,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            }
        )

    def _engine_or_build(self) -> Any:
        with self._lock:
            if self._engine is None:
                self._engine = self._build()
            return self._engine

    def read(self, image_bytes: bytes, *, sha256: str | None = None) -> OcrText:
        """OCR ``image_bytes`` (any format Pillow decodes); ValueError if undecodable."""
        sha = sha256 or hashlib.sha256(image_bytes).hexdigest()
        path = self._cache_path(sha)
        cached = _load(path)
        if cached is not None:
            return cached
        result = self._run(image_bytes)
        _store(path, result)
        return result

    def _run(self, image_bytes: bytes) -> OcrText:
        import numpy as np
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(image_bytes)) as im:
                rgb = im.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ValueError(f"image bytes cannot be decoded: {exc}") from exc
        # rapidocr treats ndarrays as OpenCV BGR.
        arr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])
        out = self._engine_or_build()(arr)
        txts = tuple(str(t) for t in (getattr(out, "txts", None) or ()))
        scores = tuple(float(s) for s in (getattr(out, "scores", None) or ()))
        # rapidocr already returns boxes in reading order (top-down, left-right).
        return OcrText(txts, scores)


def _load(path: Path) -> OcrText | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return OcrText(tuple(data["lines"]), tuple(data["scores"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store(path: Path, result: OcrText) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"lines": list(result.lines), "scores": list(result.scores)}, fh)
        os.replace(tmp, path)  # atomic: concurrent workers never see half a file
    except OSError:
        pass  # a read-only cache only costs time
