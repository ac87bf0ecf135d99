"""The real OCR model against the generator's ground truth, plus cache and determinism.

Clean kinds (no rotation, noise or texture; `clean: true` in the records) are read at full
resolution: invoice, receipt, form, table, slide, ui_screenshot, contract, screenshot_4k.
This test uses small pages of five of them with body text >= 12 px, so that it stays fast.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jiwer
import pytest

from emulator.answers import answer
from emulator.ocr import OcrEngine
from emulator.vision import FALLBACK_PROFILE, ImageDecodeError, VisionProfile, see
from emulator.workload import generate_item

CLEAN_PAGES = [  # (kind, body font px, target long side)
    ("receipt", 13, 700),
    ("form", 14, 800),
    ("table", 13, 800),
    ("slide", 20, 640),
    ("ui_screenshot", 13, 800),
]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> OcrEngine:
    return OcrEngine(cache_dir=tmp_path_factory.mktemp("ocr-cache"))


@pytest.fixture(scope="module")
def pages() -> list:
    return [generate_item(k, seed=21, index=i, format="png", font_px=f, long_side=s)
            for i, (k, f, s) in enumerate(CLEAN_PAGES, start=1)]


def test_ground_truth_matches_full_resolution_ocr(engine: OcrEngine, pages: list) -> None:
    accuracies = {}
    right = asked = 0
    for item in pages:
        rec = item.record
        assert rec["clean"]
        lines = see(item.data, (rec["width"], rec["height"]), FALLBACK_PROFILE, engine)
        accuracies[rec["kind"]] = 1 - jiwer.cer(rec["text"], "\n".join(x.text for x in lines))
        for qa in rec["qa"]:
            asked += 1
            right += answer("extract", qa["question"], lines) == qa["answer"]
    assert all(a >= 0.98 for a in accuracies.values()), accuracies
    assert right >= 0.9 * asked, (right, asked)


def test_same_input_same_answer_and_cache_survives_restart(engine: OcrEngine, pages: list,
                                                           tmp_path: Path) -> None:
    item = pages[3]  # the small slide
    size = (item.record["width"], item.record["height"])
    fresh = OcrEngine(cache_dir=tmp_path)
    first = see(item.data, size, FALLBACK_PROFILE, fresh)
    assert fresh.model_calls == 1 and first
    assert see(item.data, size, FALLBACK_PROFILE, fresh) == first
    assert fresh.model_calls == 1 and fresh.cache_hits == 1

    restarted = OcrEngine(cache_dir=tmp_path)
    assert see(item.data, size, FALLBACK_PROFILE, restarted) == first
    assert restarted.model_calls == 0 and restarted.cache_hits == 1
    assert answer("transcribe", "", first) == answer("transcribe", "", see(item.data, size, FALLBACK_PROFILE, restarted))

    smaller = see(item.data, size, VisionProfile("half", 0.5), restarted)
    assert restarted.model_calls == 1 and isinstance(smaller, list)


def test_uncached_engine_reruns_the_model_with_the_same_result(pages: list) -> None:
    item = pages[3]
    img = item.image.crop((0, 0, 320, 240))  # the title corner; kept small for speed
    engine = OcrEngine(use_cache=False)
    assert engine.read(img) == engine.read(img)
    assert engine.model_calls == 2


def test_one_engine_shared_by_threads_gives_each_caller_its_own_answer(pages: list) -> None:
    # small, not too wide crops: the detector scales the short side up to 736 px
    top = pages[3].image.crop((0, 0, 320, 240))
    other = pages[0].image.crop((0, 0, 320, 240))
    engine = OcrEngine(use_cache=False)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(engine.read, [top, other, top, other]))
    assert results[0] == results[2] and results[1] == results[3] and results[0] != results[1]
    assert engine.model_calls == 4


def test_undecodable_bytes_raise_before_the_model(engine: OcrEngine) -> None:
    calls = engine.model_calls
    with pytest.raises(ImageDecodeError, match="cannot decode image"):
        see(b"\x89PNG\r\n\x1a\n garbage", (100, 100), FALLBACK_PROFILE, engine)
    assert engine.model_calls == calls
