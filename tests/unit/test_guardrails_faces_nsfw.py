"""The face (Haar cascade from the opencv wheel) and NSFW (nudenet's ONNX) detectors: the real
models on a real face photo shipped in matplotlib's wheel and on synthesised images, the pure
decision logic over detections, and their place in the stage (block, redact, cache, failures)."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from router.guardrails.config import GuardrailsConfig, resolve
from router.guardrails.faces import HaarFaceDetector, neighbours_score
from router.guardrails.nsfw import LABELS, UNSAFE, NudeNetDetector, decode, unsafe
from router.guardrails.regions import (
    Detection,
    DetectorUnavailable,
    UnavailableDetector,
    people_likely,
)
from router.guardrails.stage import Detectors, GuardImage, run_guardrails, sha256_of
from router.guardrails.testset import CLEAN, FONTS, face_photo, render, screenshot_with_photo

PHOTO = face_photo()
needs_photo = pytest.mark.skipif(PHOTO is None, reason="matplotlib (which ships the face photo) is not installed")
FACE = (150, 100, 390, 340)  # where Grace Hopper's face is in the 512×600 photo


@pytest.fixture(scope="module")
def faces() -> HaarFaceDetector:
    return HaarFaceDetector()


@pytest.fixture(scope="module")
def nsfw() -> NudeNetDetector:
    return NudeNetDetector()


def guard(data: bytes, fmt: str = "png") -> GuardImage:
    return GuardImage(data, sha256_of(data), fmt)


def centre_inside(box: tuple[float, float, float, float], area: tuple[float, float, float, float]) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return area[0] <= cx <= area[2] and area[1] <= cy <= area[3]


@needs_photo
def test_face_found_in_the_photo(faces: HaarFaceDetector) -> None:
    assert PHOTO is not None
    (found,) = faces.detect(PHOTO)
    assert found.label == "face" and found.score >= 0.5
    assert centre_inside(found.box, FACE)


@needs_photo
@pytest.mark.parametrize("width", [160, 320])
def test_face_found_in_a_screenshot_with_a_small_photo(faces: HaarFaceDetector, width: int) -> None:
    assert PHOTO is not None
    found = faces.detect(screenshot_with_photo(PHOTO, width=width))
    x0 = 960 - width - 40
    assert len(found) == 1 and centre_inside(found[0].box, (x0, 120, x0 + width, 120 + width * 600 / 512))


@pytest.mark.parametrize("size", [12, 18, 28])
def test_no_face_in_text(faces: HaarFaceDetector, size: int) -> None:
    data = render([*CLEAN, *CLEAN], font_name=FONTS[size % len(FONTS)], size=size, angle=0, canvas=(1280, 720))
    assert faces.detect(data) == []


def test_missing_cascade_is_unavailable(tmp_path: object) -> None:
    with pytest.raises(DetectorUnavailable, match="no Haar cascade"):
        HaarFaceDetector("/nonexistent/haarcascade.xml")


@given(st.integers(min_value=0, max_value=500), st.integers(min_value=1, max_value=20))
def test_neighbours_score_is_bounded_and_monotone(n: int, minimum: int) -> None:
    s = neighbours_score(n, minimum)
    assert 0.5 <= s <= 1.0
    assert neighbours_score(n + 1, minimum) >= s


def raw(rows: list[tuple[float, float, float, float, str, float]]) -> np.ndarray:
    """A YOLOv8 output (22, N) holding the given (cx, cy, w, h, label, score) rows."""
    out = np.zeros((4 + len(LABELS), len(rows)), dtype=np.float32)
    for i, (cx, cy, w, h, label, score) in enumerate(rows):
        out[:4, i] = (cx, cy, w, h)
        out[4 + LABELS.index(label), i] = score
    return out


def test_decode_suppresses_overlaps_per_class_and_scales() -> None:
    out = raw([(100, 100, 40, 40, "BUTTOCKS_EXPOSED", 0.9), (102, 101, 40, 40, "BUTTOCKS_EXPOSED", 0.7),
               (100, 100, 40, 40, "FACE_MALE", 0.6), (10, 10, 4, 4, "ANUS_EXPOSED", 0.1)])
    found = decode(out, 2.0)
    assert [(d.label, d.score) for d in found] == [("BUTTOCKS_EXPOSED", 0.9), ("FACE_MALE", 0.6)]
    assert found[0].box == pytest.approx((160, 160, 240, 240))


def test_decode_keeps_distant_boxes_of_one_class() -> None:
    out = raw([(50, 50, 20, 20, "FEMALE_BREAST_EXPOSED", 0.8), (200, 50, 20, 20, "FEMALE_BREAST_EXPOSED", 0.75)])
    assert len(decode(out, 1.0)) == 2


def test_unsafe_counts_only_exposed_intimate_parts() -> None:
    covered = [Detection(label, 0.95, (0, 0, 10, 10)) for label in LABELS if label not in UNSAFE]
    assert unsafe(covered) == (0.0, [])
    hit = Detection("FEMALE_GENITALIA_EXPOSED", 0.7, (5, 5, 50, 50))
    assert unsafe([*covered, hit]) == (0.7, [(5, 5, 50, 50)])


@needs_photo
def test_nsfw_model_runs_offline_on_a_real_photo(nsfw: NudeNetDetector) -> None:
    assert PHOTO is not None
    found = nsfw.detect(PHOTO)
    labels = {d.label for d in found}
    assert "FACE_FEMALE" in labels  # the model really ran and saw the face
    assert unsafe(found)[0] == 0.0


def test_nsfw_finds_nothing_in_a_screenshot(nsfw: NudeNetDetector) -> None:
    data = render([*CLEAN], font_name=FONTS[0], size=18, angle=0, canvas=(960, 540))
    assert unsafe(nsfw.detect(data))[0] == 0.0


class FixedModel:
    """A RegionDetector with fixed detections; counts calls so the sha256 cache is observable."""

    def __init__(self, found: list[Detection]) -> None:
        self.found, self.calls = found, 0

    def detect(self, data: bytes) -> list[Detection]:
        self.calls += 1
        return self.found


def marked_png() -> bytes:
    """A white image with a skin-coloured square: passes both pre-checks."""
    img = Image.new("RGB", (200, 120), "white")
    img.paste((210, 160, 130), (20, 20, 80, 80))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def run(images: list[GuardImage], config: dict[str, object], det: Detectors):  # type: ignore[no-untyped-def]
    return asyncio.run(run_guardrails(images, [], resolve(GuardrailsConfig.model_validate(config)), det))


def test_nsfw_block_and_cache() -> None:
    model = FixedModel([Detection("BUTTOCKS_EXPOSED", 0.8, (20, 20, 80, 80))])
    det = Detectors(nsfw=model)
    img = guard(marked_png())
    for _ in range(2):
        out = run([img], {"nsfw": {"action": "block"}}, det)
        assert out.blocked is not None and "nsfw" in out.blocked.message
    assert model.calls == 1


def test_nsfw_below_threshold_passes_untouched() -> None:
    det = Detectors(nsfw=FixedModel([Detection("BUTTOCKS_EXPOSED", 0.4, (20, 20, 80, 80)),
                                     Detection("FACE_MALE", 0.9, (0, 0, 10, 10))]))
    img = guard(marked_png())
    out = run([img], {"nsfw": {"action": "redact"}}, det)
    assert out.blocked is None and out.images[0] is img and out.verdicts[0].verdict == "pass"


@needs_photo
def test_faces_redact_leaves_no_face(faces: HaarFaceDetector) -> None:
    assert PHOTO is not None
    shot = screenshot_with_photo(PHOTO, width=320)
    out = run([guard(shot)], {"faces": {"action": "redact", "timeout_ms": 30000}}, Detectors(faces=faces))
    (verdict,) = out.verdicts
    assert verdict.verdict == "fire" and verdict.regions
    redacted = out.images[0]
    assert redacted.data != shot and redacted.sha256 == sha256_of(redacted.data)
    assert faces.detect(redacted.data) == []
    with Image.open(io.BytesIO(redacted.data)) as a, Image.open(io.BytesIO(shot)) as b:
        assert a.size == b.size and a.format == "PNG"
        assert a.convert("L").crop((0, 0, 400, 100)).tobytes() == b.convert("L").crop((0, 0, 400, 100)).tobytes()


@needs_photo
def test_faces_block_on_the_photo(faces: HaarFaceDetector) -> None:
    assert PHOTO is not None
    out = run([guard(PHOTO, "jpeg")], {"faces": {"action": "block", "timeout_ms": 30000}}, Detectors(faces=faces))
    assert out.blocked is not None and "faces" in out.blocked.message


@pytest.mark.parametrize(("on_error", "verdict"), [("open", "error"), ("closed", "fire")])
def test_unavailable_model_fails_as_configured(on_error: str, verdict: str) -> None:
    det = Detectors(faces=UnavailableDetector("opencv-python-headless is not installed"))
    out = run([guard(marked_png())], {"faces": {"action": "redact", "on_error": on_error}}, det)
    (v,) = out.verdicts
    assert v.verdict == verdict and v.error is not None and "unavailable" in v.error and "opencv" in v.error
    assert (out.blocked is not None) == (on_error == "closed")  # a redact with nothing to black out blocks


def test_blank_image_skips_the_model() -> None:
    model = FixedModel([Detection("face", 1.0, (0, 0, 5, 5))])
    blank = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 120, 120)).save(blank, format="PNG")
    out = run([guard(blank.getvalue())], {"faces": {"action": "block"}}, Detectors(faces=model))
    assert out.blocked is None and model.calls == 0


def grey(data: bytes) -> bytes:
    out = io.BytesIO()
    with Image.open(io.BytesIO(data)) as img:
        img.convert("L").save(out, format="PNG")
    return out.getvalue()


@needs_photo
def test_people_likely_on_photos_colour_or_not() -> None:
    assert PHOTO is not None
    assert people_likely(PHOTO) and people_likely(grey(PHOTO))
    assert people_likely(screenshot_with_photo(PHOTO, width=60))


def test_people_unlikely_on_text_pages() -> None:
    for i, size in enumerate((10, 16, 24)):
        page = render([*CLEAN], font_name=FONTS[i], size=size, angle=0, canvas=(960, 540), background=(250, 246, 225))
        assert not people_likely(page) and not people_likely(grey(page))


def test_text_screenshot_skips_face_and_nsfw_models() -> None:
    faces_model, nsfw_model = FixedModel([Detection("face", 1.0, (0, 0, 5, 5))]), FixedModel([])
    page = render([*CLEAN], font_name=FONTS[0], size=18, angle=0, canvas=(960, 540))
    out = run([guard(page)], {"faces": {"action": "block"}, "nsfw": {"action": "block"}}, Detectors(faces=faces_model, nsfw=nsfw_model))
    assert out.blocked is None and faces_model.calls == 0 and nsfw_model.calls == 0


def test_wiring_loads_only_the_models_in_use_and_marks_missing_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    from aperture.wiring import build_guardrail_detectors
    from router.config import AppConfig, load_config
    from router.guardrails import faces as faces_module

    base = load_config("examples/emulated.yaml")

    def config(guardrails: dict[str, object]) -> AppConfig:
        return base.model_copy(update={"guardrails": GuardrailsConfig.model_validate(guardrails)})

    det = build_guardrail_detectors(config({"teams": {"a": {"faces": {"action": "block"}}}}))
    assert isinstance(det.faces, HaarFaceDetector) and det.nsfw is None
    assert build_guardrail_detectors(config({})) is None

    def missing(_path: object = None) -> object:
        raise DetectorUnavailable("opencv-python-headless is not installed")

    monkeypatch.setattr(faces_module, "load_cascade", missing)
    det = build_guardrail_detectors(config({"faces": {"action": "redact"}, "nsfw": {"action": "shadow"}}))
    assert isinstance(det.faces, UnavailableDetector) and "opencv" in det.faces.reason
    assert isinstance(det.nsfw, NudeNetDetector)
