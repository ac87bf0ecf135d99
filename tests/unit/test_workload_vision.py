"""Vision profiles, decoding, reading order and the OCR cache, without running the model."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from emulator.ocr import OcrEngine, OcrLine, default_cache_dir, reading_order, skew_degrees
from emulator.vision import (
    DEFAULT_PROFILES,
    FALLBACK_PROFILE,
    ImageDecodeError,
    VisionProfile,
    decode,
    drop_lines,
    profile_for,
    profiled_size,
    see,
)
from emulator.workload.encode import encode


def box(text: str, x0: float, y0: float, x1: float, y1: float) -> OcrLine:
    return OcrLine(text, (x0, y0, x1, y1), 0.9)


def png(size: tuple[int, int] = (40, 20), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (0, 0, 0, 0) if mode == "RGBA" else "white").save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("model, name", [
    ("gpt-4o", "gpt-4o"),
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
    ("claude-opus-4-7", "claude-opus-4"),
    ("o4-mini-2025-04-16", "o4-mini"),
    ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
    ("llava-13b", "default"),
])
def test_profile_lookup(model: str, name: str) -> None:
    assert profile_for(model).name == name


def test_profiles_cover_the_named_models_and_order_tiers() -> None:
    for m in ("gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "claude-sonnet-4-5", "claude-haiku-4-5",
              "gemini-2.5-flash", "gemini-2.5-pro", "gemini-3-flash"):
        assert m in DEFAULT_PROFILES
    assert DEFAULT_PROFILES["gpt-4o-mini"].resolution_scale < DEFAULT_PROFILES["gpt-4o"].resolution_scale
    assert FALLBACK_PROFILE.resolution_scale == 1.0 and FALLBACK_PROFILE.line_drop == 0.0


def test_profiled_size() -> None:
    assert profiled_size((1000, 500), VisionProfile("p")) == (1000, 500)
    assert profiled_size((1000, 500), VisionProfile("p", 0.8)) == (800, 400)
    assert profiled_size((2000, 1000), VisionProfile("p", 1.0, max_side=1000)) == (1000, 500)


@pytest.mark.parametrize("kwargs", [{"resolution_scale": 0}, {"resolution_scale": 1.5},
                                    {"line_drop": 1.0}, {"max_side": 4}])
def test_bad_profile_is_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        VisionProfile("bad", **kwargs)


@given(st.lists(st.text(min_size=1, max_size=12), max_size=60), st.floats(0.0, 0.9))
def test_line_drop_is_deterministic_and_a_subset(texts: list[str], share: float) -> None:
    lines = [box(t, 0, i * 10, 50, i * 10 + 8) for i, t in enumerate(texts)]
    p = VisionProfile("p", line_drop=share)
    kept = drop_lines(lines, p)
    assert kept == drop_lines(lines, p)
    assert all(k in lines for k in kept) and len(kept) <= len(lines)


def test_line_drop_share_is_roughly_honoured() -> None:
    lines = [box(f"line {i}", 0, i * 10, 50, i * 10 + 8) for i in range(2000)]
    kept = drop_lines(lines, VisionProfile("p", line_drop=0.1))
    assert 0.85 < len(kept) / 2000 < 0.95
    assert drop_lines(lines, VisionProfile("p")) == lines


def test_reading_order_groups_rows_and_sorts_left_to_right() -> None:
    boxes = [box("$12.00", 400, 102, 460, 114), box("Second", 10, 40, 80, 52),
             box("Total:", 10, 100, 60, 113), box("First", 10, 10, 70, 22), box("row", 90, 41, 120, 53)]
    assert [x.text for x in reading_order(boxes)] == ["First", "Second row", "Total: $12.00"]


def test_reading_order_keeps_close_rows_apart() -> None:
    boxes = [box("a", 0, 0, 10, 12), box("b", 0, 10, 10, 22), box("c", 20, 1, 30, 13)]
    assert [x.text for x in reading_order(boxes)] == ["a c", "b"]


def test_skew_from_box_edges() -> None:
    tilted = [[(0.0, 0.0), (100.0, 5.24), (99.0, 17.0), (-1.0, 12.0)]] * 3
    assert skew_degrees(tilted) == pytest.approx(3.0, abs=0.05)
    assert skew_degrees([]) == 0.0


def test_decode_formats_and_transparency() -> None:
    img = Image.new("RGB", (30, 20), "white")
    for fmt in ("png", "jpeg", "webp", "heic"):
        assert decode(encode(img, fmt)).size == (30, 20)
    flat = decode(png(mode="RGBA"))
    assert flat.mode == "RGB" and flat.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("data", [b"", b"not an image", png()[:30]])
def test_undecodable_bytes_raise_a_clear_error(data: bytes) -> None:
    with pytest.raises(ImageDecodeError, match="image"):
        decode(data)
    with pytest.raises(ImageDecodeError):
        see(data, (10, 10), FALLBACK_PROFILE, OcrEngine(instant=True))


def test_bad_effective_size_is_refused() -> None:
    with pytest.raises(ValueError, match="effective_size"):
        see(png(), (0, 10), FALLBACK_PROFILE, OcrEngine(instant=True))


def test_instant_engine_never_runs_the_model(tmp_path: Path) -> None:
    engine = OcrEngine(cache_dir=tmp_path, instant=True)
    assert see(png(), (20, 10), FALLBACK_PROFILE, engine) == []
    assert engine.model_calls == 0 and not engine.model_loaded and not any(tmp_path.iterdir())


def test_cache_round_trip_and_damaged_entries(tmp_path: Path) -> None:
    engine = OcrEngine(cache_dir=tmp_path)
    lines = [OcrLine("Total: $1.00", (1.0, 2.0, 3.0, 4.0), 0.97)]
    engine.store("k1", lines)
    assert OcrEngine(cache_dir=tmp_path).lookup("k1") == lines
    broken = engine.engine.cache_path(engine._key("k2"))
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text("{broken")
    assert engine.lookup("k2") is None and engine.lookup("absent") is None
    assert not list(tmp_path.rglob("*.tmp"))


def test_default_cache_dir_from_environment(tmp_path: Path) -> None:
    assert default_cache_dir({"APERTURE_CACHE_DIR": str(tmp_path)}) == tmp_path / "ocr"
    assert default_cache_dir({}) == Path.home() / ".cache" / "aperture" / "ocr"
