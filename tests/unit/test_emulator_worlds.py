"""Emulated worlds: deterministic, versioned, and each doing what its name says (pure logic,
fed OCR lines; no OCR model)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator import answers
from emulator.engine import AnswerRequest, SeenImage, VisionAnswerer
from emulator.ocr import OcrLine
from emulator.vision import DEFAULT_PROFILES, profile_for, see
from emulator.worlds import WORLDS, UnknownWorldError, get_world
from emulator.worlds.misreads import Misreads, ReadContext, misread, small_strength, swap_digit

SHA = "ab" * 32


def page(n: int, height: float, text: str = "Item {i} costs $1{i}.50") -> list[OcrLine]:
    return [OcrLine(text.format(i=i), (0.0, 20.0 * i, 300.0, 20.0 * i + height), 0.99) for i in range(n)]


def read(world: str, model: str, lines: list[OcrLine], task: str = "transcribe", prompt: str = "",
         sha: str = SHA) -> list[OcrLine]:
    w = get_world(world)
    return misread(lines, ReadContext(w.key, model, sha, task, prompt), w.misreads_for(model))


def lost(world: str, model: str, lines: list[OcrLine], images: int = 40, **kw: str) -> float:
    """Share of line texts not read intact, over several images (different hashes)."""
    total = bad = 0
    for k in range(images):
        got = {ln.text for ln in read(world, model, lines, sha=f"{k:064x}", **kw)}
        total += len(lines)
        bad += sum(ln.text not in got for ln in lines)
    return bad / total


def test_worlds_are_named_and_versioned():
    assert {"pixels", "small-models-misread", "provider-strengths", "flat", "adversarial"} <= set(WORLDS)
    for name, w in WORLDS.items():
        assert w.name == name and w.version >= 1 and w.key == f"{name}@{w.version}" and w.summary
    assert get_world(None).name == "pixels"
    with pytest.raises(UnknownWorldError):
        get_world("kind")


@pytest.mark.parametrize("world", sorted(WORLDS))
def test_every_world_is_deterministic(world):
    lines = page(40, 9.0)
    for model in ("gpt-4o", "gpt-4.1-mini", "gemini-2.5-flash", "claude-haiku-4-5"):
        assert read(world, model, lines) == read(world, model, lines)


def test_the_version_seeds_the_draws():
    w = get_world("small-models-misread")
    bumped = dataclasses.replace(w, version=w.version + 1)
    lines = page(60, 10.0)
    m = w.misreads_for("gpt-4.1-mini")
    a = misread(lines, ReadContext(w.key, "gpt-4.1-mini", SHA, "transcribe", ""), m)
    b = misread(lines, ReadContext(bumped.key, "gpt-4.1-mini", SHA, "transcribe", ""), m)
    assert a != b


def test_pixels_is_the_original_world():
    w = get_world("pixels")
    assert dict(w.profiles) == DEFAULT_PROFILES and w.read_side is None
    for model in DEFAULT_PROFILES:
        assert w.misreads_for(model).none
        assert w.profile(model) == profile_for(model)
    assert w.read_size((1000, 800), (512, 410)) == (512, 410)


class CannedEngine:
    """An OCR engine stand-in that has every image already read."""

    def __init__(self, lines: list[OcrLine]) -> None:
        self.lines, self.keys = lines, []

    def lookup(self, key: str) -> list[OcrLine]:
        self.keys.append(key)
        return self.lines


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4.1-mini", "gemini-2.5-flash-lite"])
@pytest.mark.parametrize("task", answers.TASKS)
def test_pixels_answers_exactly_as_before(model, task):
    lines = page(12, 9.0) + [OcrLine("Total: $12.50", (0, 300, 90, 309), 0.9)]
    prompt = "What is the total?" if task == "extract" else "Transcribe all the text."
    img = SeenImage(SHA, b"png", "png", 1000, 800, "high", (768, 614), 700)
    old_engine, new_engine = CannedEngine(lines), CannedEngine(lines)
    before = answers.answer(task, prompt, see(img.data, img.effective, profile_for(model), old_engine))  # type: ignore[arg-type]
    answerer = VisionAnswerer(world=get_world("pixels"))
    answerer._local.engine = new_engine
    assert answerer.answer(AnswerRequest(model, model, task, prompt, (img,))) == before
    assert new_engine.keys == old_engine.keys  # the same pixels read


def test_small_models_misread_small_text_worse_than_the_flagship_at_the_same_size():
    small_text = page(30, 8.0)
    mini, flagship = lost("small-models-misread", "gpt-4.1-mini", small_text), lost("small-models-misread", "gpt-4o", small_text)
    assert mini > flagship + 0.2
    assert lost("small-models-misread", "gemini-2.5-flash", small_text) > flagship + 0.2
    # Large text on a short page: both read it intact.
    big = page(8, 40.0)
    assert lost("small-models-misread", "gpt-4.1-mini", big) == 0 == lost("small-models-misread", "gpt-4o", big)


def test_small_models_misread_dense_pages():
    dense, sparse = page(70, 30.0), page(20, 30.0)
    assert lost("small-models-misread", "gpt-4.1-mini", dense) > 0.15
    assert lost("small-models-misread", "gpt-4.1-mini", sparse) == 0
    assert lost("small-models-misread", "gpt-4o", dense) == 0


def test_small_models_confuse_look_alike_fields():
    lines = [OcrLine("Subtotal: $10.00", (0, 0, 90, 30), 0.9), OcrLine("Tax: $1.00", (0, 40, 90, 70), 0.9),
             OcrLine("Total: $11.00", (0, 80, 90, 110), 0.9), OcrLine("Paid: $20.00", (0, 120, 90, 150), 0.9),
             OcrLine("Change: $9.00", (0, 160, 90, 190), 0.9)]
    q = "What is the total?"
    wrong = {m: sum(answers.answer("extract", q, read("small-models-misread", m, lines, "extract", q, f"{k:064x}"))
                    != "$11.00" for k in range(200)) for m in ("gpt-4.1-mini", "gpt-4o")}
    assert wrong["gpt-4.1-mini"] > 2 * wrong["gpt-4o"] > 0
    assert all(answers.answer("extract", q, read("pixels", m, lines, "extract", q)) == "$11.00" for m in wrong)


def test_flat_reads_the_same_pixels_on_every_route():
    w = get_world("flat")
    sizes = {w.read_size((2400, 1800), eff) for eff in [(512, 384), (768, 576), (1536, 1152), (2048, 1536)]}
    assert sizes == {(1536, 1152)}
    assert {w.profile(m).resolution_scale for m in DEFAULT_PROFILES} == {1.0}
    assert all(w.misreads_for(m).none for m in DEFAULT_PROFILES)
    assert w.read_size((600, 400), (512, 341)) == (600, 400)


def test_provider_strengths():
    receipt = page(10, 30.0, "Subtotal $1{i}.00 visa cash")
    slide = [OcrLine("Roadmap", (0, 0, 200, 40), 0.9)] + page(6, 30.0, "- point {i} of the plan")
    assert answers.guess_kind([ln.text for ln in receipt]) == "receipt"
    assert answers.guess_kind([ln.text for ln in slide]) == "slide"
    world = "provider-strengths"
    assert lost(world, "gemini-2.5-flash", receipt) > 0.15 and lost(world, "gpt-4.1-mini", receipt) == 0
    assert lost(world, "gpt-4.1-mini", slide) > 0.15 and lost(world, "gemini-2.5-flash", slide) == 0
    assert lost(world, "gpt-4o", slide) > 0.15 and lost(world, "gemini-2.5-pro", receipt) > 0.15


def test_adversarial_cheap_route_fails_only_on_reports():
    report = [OcrLine("Quarterly budget report", (0, 0, 300, 30), 0.9)] + page(12, 30.0, "Row {i} variance $1{i}.00")
    invoice = [OcrLine("INVOICE", (0, 0, 300, 30), 0.9)] + page(12, 30.0, "Bill to line {i} unit price $1{i}")
    assert lost("adversarial", "gpt-4.1-mini", report) > 0.3
    assert lost("adversarial", "gpt-4.1-mini", invoice) == 0
    assert lost("adversarial", "gpt-4o", report) == 0 and lost("adversarial", "gemini-2.5-flash", report) == 0


def test_misreads_validate_rates():
    with pytest.raises(ValueError):
        Misreads(drop_small=1.5)
    with pytest.raises(ValueError):
        Misreads(small_px=-1)


@given(st.floats(0, 100), st.floats(1, 50))
def test_small_strength_is_a_ramp(height, small_px):
    s = small_strength(height, small_px)
    assert 0 <= s <= 1
    assert (s == 0) == (height >= small_px)
    assert small_strength(height / 2, small_px) >= s


@given(st.text(alphabet="ab 0123456789$.", max_size=30), st.floats(0, 0.999))
def test_swap_digit_changes_one_digit(text, u):
    out = swap_digit(text, u)
    assert len(out) == len(text)
    assert sum(a != b for a, b in zip(text, out, strict=True)) == (1 if any(c.isdigit() for c in text) else 0)


def test_health_names_the_world():
    from fastapi.testclient import TestClient

    from emulator.server import create_emulator_app

    with TestClient(create_emulator_app(mode="instant", world="flat")) as client:
        assert client.get("/_emulator/health").json()["world"] == "flat@1"
    with TestClient(create_emulator_app(mode="instant")) as client:
        assert client.get("/_emulator/health").json()["world"] == "pixels@1"
    with pytest.raises(UnknownWorldError):
        create_emulator_app(mode="instant", world="nope")


def test_cli_lists_worlds_and_refuses_an_unknown_one():
    from typer.testing import CliRunner

    from aperture.cli import app

    runner = CliRunner()
    listed = runner.invoke(app, ["emulate", "--list-worlds"])
    assert listed.exit_code == 0
    for w in WORLDS.values():
        assert w.key in listed.output
    bad = runner.invoke(app, ["emulate", "--world", "nope"])
    assert bad.exit_code != 0 and "unknown world" in bad.output
    bad_demo = runner.invoke(app, ["demo", "--world", "nope"])
    assert bad_demo.exit_code != 0 and "unknown world" in bad_demo.output
