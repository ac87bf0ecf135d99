"""The synthetic workload: deterministic, well-formed, files as claimed, mix as documented."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from emulator.workload import (
    DEFAULT_MIX,
    KINDS,
    generate_item,
    generate_workload,
    load_ground_truth,
    parse_mix,
    plan,
)
from emulator.workload.fields import FIELDS
from emulator.workload.spec import allocate, check_mix

SMALL_MIX = {"invoice": 1, "receipt": 1, "slide": 1, "sign_photo": 1, "form": 1, "table": 1}
RECORD_KEYS = {"id", "file", "kind", "task", "format", "width", "height", "bytes", "sha256",
               "font_px", "text_height_px", "lines", "text", "fields", "qa", "prompt", "clean",
               "params", "seed"}


def magic_format(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"msf1"):
        return "heic"
    return "unknown"


@pytest.fixture(scope="module")
def workload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("wl")
    return out, generate_workload(24, seed=7, out_dir=out)


def test_same_seed_same_bytes_and_records(tmp_path: Path) -> None:
    a = generate_workload(4, seed=3, out_dir=tmp_path / "a", mix=SMALL_MIX)
    b = generate_workload(4, seed=3, out_dir=tmp_path / "b", mix=SMALL_MIX)
    assert a == b
    assert (tmp_path / "a/ground_truth.jsonl").read_bytes() == (tmp_path / "b/ground_truth.jsonl").read_bytes()
    c = generate_workload(4, seed=4, out_dir=tmp_path / "c", mix=SMALL_MIX)
    assert [r["sha256"] for r in a] != [r["sha256"] for r in c]


def test_item_does_not_depend_on_workload_size() -> None:
    one = generate_item("receipt", seed=5, index=3)
    again = generate_item("receipt", seed=5, index=3)
    assert one.data == again.data and one.record == again.record


def test_records_match_schema_and_files(workload: tuple[Path, list[dict]]) -> None:
    out, records = workload
    lines = (out / "ground_truth.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == records
    assert load_ground_truth(out) == load_ground_truth(out / "ground_truth.jsonl") == records
    for i, r in enumerate(records, start=1):
        assert set(r) == RECORD_KEYS
        assert r["id"] == f"wl-s7-{i:05d}" and r["seed"] == 7
        data = (out / r["file"]).read_bytes()
        assert r["file"].startswith(f"images/{r['id']}.")
        assert magic_format(data) == r["format"]
        assert len(data) == r["bytes"]
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        if r["format"] == "heic":
            import pillow_heif

            pillow_heif.register_heif_opener()
        with Image.open(io.BytesIO(data)) as img:
            assert img.size == (r["width"], r["height"])
        assert r["text"] == "\n".join(r["lines"]) and all(x.strip() for x in r["lines"])
        assert r["clean"] == KINDS[r["kind"]].clean
        assert r["params"]["kind"] == r["kind"] and r["params"]["text_height_metric"] == "cap_height"
        assert 0 < r["text_height_px"] < r["font_px"]


def test_fields_are_drawn_and_questions_answerable(workload: tuple[Path, list[dict]]) -> None:
    _, records = workload
    for r in records:
        for key, value in r["fields"].items():
            assert value and value in r["text"], (r["id"], key)
        for q in r["qa"]:
            assert q["answer"] == r["fields"][q["field"]]
            assert q["question"] == FIELDS[q["field"]].question
        if r["task"] == "extract":
            assert r["prompt"] == r["qa"][0]["question"]
            assert r["params"]["ask_field"] == r["qa"][0]["field"]
        elif r["task"] == "transcribe":
            assert r["prompt"] == "Transcribe all the text in this image."
        else:
            assert r["task"] == "describe" and r["prompt"] == "Describe this image briefly."


def test_realistic_values_on_an_invoice() -> None:
    r = generate_item("invoice", seed=1, index=1, task="extract", field="total").record
    f = r["fields"]
    assert f["invoice_number"].startswith("INV-20") and f["total"].startswith("$")
    assert "@" in f["email"] and r["prompt"] == "What is the total?"
    assert f"Total: {f['total']}" in r["lines"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_honours_size_and_font_ranges(kind: str) -> None:
    r = generate_item(kind, seed=11, index=2, format="png").record
    assert 200 <= max(r["width"], r["height"]) <= 4096
    assert 8 <= r["params"]["smallest_px"] <= r["params"]["heading_px"] <= 48
    lo, hi = KINDS[kind].font_px
    assert lo <= r["font_px"] <= hi
    assert r["lines"]


def test_small_text_on_big_pages_and_big_text_on_small_images() -> None:
    kinds = plan(200, seed=1)
    assert Counter(kinds)["screenshot_4k"] >= 10
    big = generate_item("contract", seed=2, index=1, format="png").record
    small = generate_item("sign_photo", seed=2, index=1, format="png").record
    assert max(big["width"], big["height"]) >= 1700 and big["font_px"] <= 11
    assert max(small["width"], small["height"]) <= 1200 and small["font_px"] >= 20


def test_default_mix_is_followed_exactly_in_counts() -> None:
    counts = Counter(plan(100, seed=9))
    assert counts == {k: round(100 * w) for k, w in DEFAULT_MIX.items()}
    assert abs(sum(DEFAULT_MIX.values()) - 1) < 1e-9


def test_task_mix_is_mostly_transcribe_and_extract(workload: tuple[Path, list[dict]]) -> None:
    tasks = Counter(r["task"] for r in workload[1])
    assert tasks["transcribe"] + tasks["extract"] >= 0.7 * len(workload[1])


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 500),
       weights=st.dictionaries(st.sampled_from(sorted(KINDS)), st.floats(0.01, 10), min_size=1))
def test_allocation_sums_to_n_and_stays_within_one_of_the_share(n: int, weights: dict) -> None:
    mix = check_mix(weights)
    counts = Counter(allocate(n, mix))
    assert sum(counts.values()) == n
    for k, w in mix.items():
        assert abs(counts[k] - n * w) < 1


@pytest.mark.parametrize("mix, message", [
    ({"poster": 1.0}, "unknown kinds"),
    ({"invoice": -1.0, "receipt": 2.0}, ">= 0"),
    ({"invoice": 0.0}, "sum to > 0"),
])
def test_bad_mix_is_refused(tmp_path: Path, mix: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_workload(2, seed=1, out_dir=tmp_path, mix=mix)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n must be"):
        generate_workload(-1, seed=1, out_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown kind"):
        generate_item("poster", seed=1, index=1)
    with pytest.raises(ValueError, match="unknown overrides"):
        generate_item("invoice", seed=1, index=1, colour="red")
    with pytest.raises(ValueError, match="unknown format"):
        generate_item("invoice", seed=1, index=1, format="bmp")
    with pytest.raises(ValueError, match="not on this"):
        generate_item("slide", seed=1, index=1, task="extract", field="invoice_number")


def test_empty_workload_writes_an_empty_ground_truth(tmp_path: Path) -> None:
    assert generate_workload(0, seed=1, out_dir=tmp_path) == []
    assert (tmp_path / "ground_truth.jsonl").read_text() == ""


def test_parse_mix_from_the_command_line() -> None:
    assert parse_mix("invoice=3, receipt=1") == {"invoice": 0.75, "receipt": 0.25}
    assert parse_mix("slide") == {"slide": 1.0}
    for bad, message in (("invoice=lots", "bad weight"), ("", "empty mix"), ("poster=1", "unknown")):
        with pytest.raises(ValueError, match=message):
            parse_mix(bad)
