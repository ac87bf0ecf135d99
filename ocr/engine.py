"""rapidocr (PP-OCR ONNX weights shipped in its wheel) behind a lock and a disk cache.

The emulator reads images at the resolution a provider would see; evals read stored images
at full resolution for evidence. Both need the same things around the model, so they live
here once: the model is built on first use with the caller's settings, runs one call at a
time per engine with denormal floats flushed to zero (``ocr.fpu``: about a third less CPU,
same text), and results are cached on disk as JSON under a key that includes the settings,
the flush flag and :data:`CACHE_VERSION`, so a changed setting never reads a stale entry.

Threading: one engine runs its model in one thread at a time (a lock); onnxruntime releases
the GIL while it runs, so two engines in two threads of one process really read two images
at once. The cache is safe across threads and processes (a temporary file, then a rename).
An engine pickles without its model, for process pools.

    >>> engine = OcrEngine({"Global.log_level": "critical"}, namespace="demo")  # doctest: +SKIP
    >>> boxes = engine.run(bgr_array)                                            # doctest: +SKIP
    >>> engine.store("page-1", [b.text for b in boxes])                          # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ocr.fpu import denormals_flushed

#: Bump when what a read stores changes for the same input and settings.
CACHE_VERSION = 1

Point = tuple[float, float]


@dataclass(frozen=True)
class OcrBox:
    """One text box as the model returned it: four corner points, the text, its confidence."""

    points: tuple[Point, Point, Point, Point]
    text: str
    score: float


def default_cache_dir(namespace: str, env: Mapping[str, str] | None = None) -> Path:
    """``$APERTURE_CACHE_DIR/<namespace>`` when set, else ``~/.cache/aperture/<namespace>``."""
    env = os.environ if env is None else env
    root = env.get("APERTURE_CACHE_DIR")
    return (Path(root) if root else Path.home() / ".cache" / "aperture") / namespace


class OcrEngine:
    """One rapidocr model built from ``settings`` (rapidocr ``params``), a lock and a cache.

    ``cache_dir=None`` resolves :func:`default_cache_dir` of ``namespace`` at each use, so an
    ``APERTURE_CACHE_DIR`` set after construction (a long-lived instance) is honoured.
    ``flush_denormals=False`` exists only to measure what flushing saves.
    """

    def __init__(self, settings: Mapping[str, Any], *, namespace: str,
                 cache_dir: Path | str | None = None, use_cache: bool = True,
                 flush_denormals: bool = True) -> None:
        self.settings = dict(settings)
        self.namespace = namespace
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.use_cache = use_cache
        self.flush_denormals = flush_denormals
        self.model_calls = 0
        self.cache_hits = 0
        self._lock = threading.Lock()
        self._model: Any = None
        self._fingerprint = hashlib.sha256(json.dumps(
            {"v": CACHE_VERSION, "settings": self.settings, "flush": flush_denormals},
            sort_keys=True, default=str).encode()).hexdigest()

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings, "namespace": self.namespace, "cache_dir": self._cache_dir,
                "use_cache": self.use_cache, "flush_denormals": self.flush_denormals}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state.pop("settings"), **state)  # type: ignore[misc]

    @property
    def cache_dir(self) -> Path:
        return self._cache_dir if self._cache_dir is not None else default_cache_dir(self.namespace)

    @property
    def model_loaded(self) -> bool:
        return self._model is not None

    # -- the model ---------------------------------------------------------------------
    def _build(self) -> Any:
        import onnxruntime
        from rapidocr import RapidOCR

        onnxruntime.set_default_logger_severity(3)
        model = RapidOCR(params=dict(self.settings))
        logging.getLogger("RapidOCR").setLevel(logging.CRITICAL)
        return model

    def run(self, image: np.ndarray, *, det_limit: tuple[str, float] | None = None) -> list[OcrBox]:
        """The model on ``image`` (an ndarray, read as BGR by rapidocr). ``det_limit`` sets
        the detector's ``(limit_type, limit_side_len)`` for this call only."""
        with self._lock:
            if self._model is None:
                self._model = self._build()
            if det_limit is not None:
                det = self._model._load_det_model()
                det.limit_type, det.limit_side_len = det_limit
            with denormals_flushed() if self.flush_denormals else nullcontext():
                result = self._model(image)
            self.model_calls += 1
        return _boxes(result)

    # -- cache -------------------------------------------------------------------------
    def cache_path(self, key: str) -> Path:
        digest = hashlib.sha256(f"{self._fingerprint}:{key}".encode()).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.json"

    def lookup(self, key: str) -> Any | None:
        """The JSON value stored under ``key``, or None (also for a damaged entry, or with the
        cache off)."""
        if not self.use_cache:
            return None
        try:
            value = json.loads(self.cache_path(key).read_text("utf-8"))["value"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        self.cache_hits += 1
        return value

    def store(self, key: str, value: Any) -> None:
        """Write ``value`` (JSON-able) under ``key``; a read-only cache only costs time."""
        if not self.use_cache:
            return
        path = self.cache_path(key)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"key": key, "value": value}), "utf-8")
            os.replace(tmp, path)  # atomic: concurrent readers never see half a file
        except OSError:
            tmp.unlink(missing_ok=True)


def _boxes(result: Any) -> list[OcrBox]:
    boxes = getattr(result, "boxes", None)
    txts = getattr(result, "txts", None)
    scores = getattr(result, "scores", None)
    if boxes is None or txts is None or scores is None:
        return []
    out = []
    for poly, text, score in zip(boxes, txts, scores, strict=False):
        p = [(float(x), float(y)) for x, y in poly]
        out.append(OcrBox((p[0], p[1], p[2], p[3]), str(text), float(score)))
    return out
