"""The shared OCR engine's cache: keyed by settings, flush flag and version; safe to damage."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from ocr import engine as ocr_engine
from ocr.engine import OcrEngine, default_cache_dir


def test_key_includes_settings_and_flush_flag(tmp_path: Path) -> None:
    a = OcrEngine({"Det.limit_side_len": 2000}, namespace="t", cache_dir=tmp_path)
    a.store("img", {"lines": ["x"]})
    assert OcrEngine({"Det.limit_side_len": 2000}, namespace="t", cache_dir=tmp_path).lookup("img") == {"lines": ["x"]}
    assert OcrEngine({"Det.limit_side_len": 1000}, namespace="t", cache_dir=tmp_path).lookup("img") is None
    assert OcrEngine({"Det.limit_side_len": 2000}, namespace="t", cache_dir=tmp_path,
                     flush_denormals=False).lookup("img") is None
    assert a.cache_hits == 0 and not a.model_loaded and a.model_calls == 0


def test_cache_version_is_in_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    OcrEngine({}, namespace="t", cache_dir=tmp_path).store("img", [1])
    monkeypatch.setattr(ocr_engine, "CACHE_VERSION", ocr_engine.CACHE_VERSION + 1)
    assert OcrEngine({}, namespace="t", cache_dir=tmp_path).lookup("img") is None


def test_damaged_entries_miss_and_no_temporary_files_stay(tmp_path: Path) -> None:
    engine = OcrEngine({}, namespace="t", cache_dir=tmp_path)
    path = engine.cache_path("bad")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert engine.lookup("bad") is None and engine.lookup("absent") is None
    engine.store("good", {"a": 1})
    assert engine.lookup("good") == {"a": 1} and engine.cache_hits == 1
    assert not list(tmp_path.rglob("*.tmp"))


def test_cache_off_neither_reads_nor_writes(tmp_path: Path) -> None:
    engine = OcrEngine({}, namespace="t", cache_dir=tmp_path, use_cache=False)
    engine.store("k", 1)
    assert engine.lookup("k") is None and not any(tmp_path.iterdir())


def test_cache_dir_follows_the_environment_at_each_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = OcrEngine({}, namespace="refocr")
    monkeypatch.setenv("APERTURE_CACHE_DIR", str(tmp_path))
    assert engine.cache_dir == tmp_path / "refocr"
    assert default_cache_dir("ocr", {}) == Path.home() / ".cache" / "aperture" / "ocr"


def test_engine_pickles_without_its_model(tmp_path: Path) -> None:
    engine = OcrEngine({"x": 1}, namespace="t", cache_dir=tmp_path, flush_denormals=False)
    engine.store("k", "v")
    clone = pickle.loads(pickle.dumps(engine))
    assert clone.settings == {"x": 1} and clone.flush_denormals is False and not clone.model_loaded
    assert clone.lookup("k") == "v"
