"""Image guardrails: precision/recall per detector on the generated set (by font size), the
false-positive rate on clean documents, recall of single lines on sparse 1080p pages (the gate),
faces on a real photo, and p50/p95 latency per detector and overall on 1080p images.

    python -m benchmarks.guardrails                 # 180 labelled samples (30 per kind), 5 runs
    python -m benchmarks.guardrails --samples 36 --runs 3

Detection runs the guardrail reader (:class:`aperture.guardrail_ocr.RapidOcrReader`) with the
scale the stage would pick from intake's text height. Latency runs the real stage
(:func:`router.guardrails.stage.run_guardrails`) with the real models, OCR disk cache off, so
it is what an inline request adds on a cache miss; a second pass measures the sha256-cache hit.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import sys
import time
from collections.abc import Sequence

from PIL import Image, ImageDraw

from aperture.guardrail_ocr import RapidOcrReader
from router.guardrails.config import GuardrailsConfig, resolve
from router.guardrails.faces import HaarFaceDetector
from router.guardrails.injection import score_injection
from router.guardrails.nsfw import NudeNetDetector
from router.guardrails.pii import find_pii
from router.guardrails.stage import Detectors, GuardImage, ocr_scale, run_guardrails, sha256_of
from router.guardrails.testset import (
    CLEAN,
    FONTS,
    face_photo,
    generate,
    render,
    screenshot_with_photo,
)
from router.images.features import estimate_text_height
from router.images.sniff import sniff

KINDS = ("card", "email", "phone", "iban", "injection")


def read_as_stage(reader: RapidOcrReader, data: bytes) -> str:
    """The text the stage would get: the scale follows intake's text height (None → the gate)."""
    height = estimate_text_height(data, sniff(data))
    return " ".join(line.text for line in reader.read(data, None if height is None else ocr_scale(height)))


def quality(reader: RapidOcrReader, n: int, sizes: range | None = None) -> dict[str, tuple[int, int, int]]:
    """(tp, fp, fn) per kind over ``n`` samples (those with a font size in ``sizes``)."""
    counts = {k: [0, 0, 0] for k in KINDS}
    for sample in generate(n):
        if sizes is not None and sample.size not in sizes:
            continue
        text = read_as_stage(reader, sample.data)
        found = {f.kind for f in find_pii(text)}
        if score_injection(text).score >= 0.5:
            found.add("injection")
        truth = set(sample.pii) | ({"injection"} if sample.injection else set())
        for k in KINDS:
            counts[k][0] += k in found and k in truth
            counts[k][1] += k in found and k not in truth
            counts[k][2] += k not in found and k in truth
    return {k: (v[0], v[1], v[2]) for k, v in counts.items()}


def clean_fp(reader: RapidOcrReader, n: int = 30) -> tuple[int, int]:
    """(documents with any finding, documents) over ``n`` clean multi-line documents."""
    hits = 0
    docs = [render(list(CLEAN[i % 6:] + CLEAN[:i % 6]), font_name=FONTS[i % len(FONTS)], size=10 + 2 * (i % 8),
                   angle=(0, 2, -3)[i % 3], noise=8.0 if i % 3 == 0 else 0.0, seed=i) for i in range(n)]
    for data in docs:
        text = read_as_stage(reader, data)
        hits += bool(find_pii(text)) or score_injection(text).score >= 0.5
    return hits, len(docs)


def sparse_recall(reader: RapidOcrReader) -> None:
    """One line with an e-mail on a 1920×1080 page with a mark in the far corner (so the page,
    not the line, is what the reader sees): found / tried per font size, and mean ms."""
    from router.guardrails.testset import font

    for size in (10, 12, 14, 18, 24):
        found, times = 0, []
        backgrounds: tuple[str | tuple[int, int, int], ...] = ("white", (232, 240, 250), (250, 246, 225), "white")
        for i, bg in enumerate(backgrounds):
            img = Image.new("RGB", (1920, 1080), bg)
            draw = ImageDraw.Draw(img)
            draw.text((60 + 300 * i, 80 + 200 * i), f"Contact jane.doe{i}@example.com", fill=(20, 20, 20), font=font(FONTS[i], size))
            draw.rectangle((1880, 1040, 1890, 1050), fill=(90, 90, 90))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            start = time.perf_counter()
            text = read_as_stage(reader, buf.getvalue())
            times.append((time.perf_counter() - start) * 1000)
            found += any(f.kind == "email" for f in find_pii(text))
        print(f"sparse 1080p line, {size:>2} px: e-mail found {found}/4, mean {statistics.mean(times):.0f} ms")


def faces_check() -> None:
    """The face photo alone and pasted at several widths into a 960×540 screenshot."""
    photo = face_photo()
    if photo is None:
        print("faces: matplotlib's face photo is not installed")
        return
    det = HaarFaceDetector()
    print(f"faces: photo {len(det.detect(photo))} found", end="")
    for width in (60, 90, 120, 160, 240, 320):
        print(f"; {width} px wide in a screenshot: {len(det.detect(screenshot_with_photo(photo, width=width)))}", end="")
    text_pages = [render([*CLEAN, *CLEAN], font_name=FONTS[i % len(FONTS)], size=10 + 4 * i, angle=0, canvas=(1920, 1080)) for i in range(8)]
    print(f"; text-only 1080p pages with a face: {sum(bool(det.detect(p)) for p in text_pages)}/{len(text_pages)}")


def hd_images() -> dict[str, bytes]:
    """1920×1080 screenshot (UI text with a card), photo-like gradient with shapes, document page."""
    lines = ["Account settings", "Name: Jane Doe", "E-mail: jane.doe@example.com", "Card 4111 1111 1111 1111", *CLEAN]
    shot = render(lines, font_name=FONTS[0], size=22, angle=0, canvas=(1920, 1080))
    photo = Image.new("RGB", (1920, 1080))
    draw = ImageDraw.Draw(photo)
    for y in range(1080):
        draw.line((0, y, 1920, y), fill=(40 + y // 8, 90 + y // 12, 160 - y // 10))
    draw.ellipse((700, 300, 1200, 800), fill=(210, 160, 130))
    buf = io.BytesIO()
    photo.save(buf, format="JPEG", quality=85)
    doc = render([*CLEAN, *CLEAN, "IBAN DE89 3704 0044 0532 0130 00"], font_name=FONTS[1], size=20, angle=0, canvas=(1920, 1080))
    slide = render(lines, font_name=FONTS[0], size=40, angle=0, canvas=(1920, 1080))  # large text: read downscaled
    images = {"screenshot": shot, "photo": buf.getvalue(), "document": doc, "slide": slide}
    portrait = face_photo()
    if portrait is not None:  # a screenshot with a profile photo: every detector has work
        images["profile"] = screenshot_with_photo(portrait, width=240, canvas=(1920, 1080), text=lines)
    return images


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def latency(reader: RapidOcrReader, runs: int, *, kinds: Sequence[str] | None = None) -> None:
    on = {"action": "flag", "timeout_ms": 60000}
    cfg = resolve(GuardrailsConfig.model_validate({"pii": on, "injection": on, "faces": on, "nsfw": on}))
    faces, nsfw = HaarFaceDetector(), NudeNetDetector()
    print(f"{'image':<11} {'detector':<10} {'p50 ms':>8} {'p95 ms':>8}   (cache miss; overall = stage wall time)")
    for kind, data in hd_images().items():
        if kinds and kind not in kinds:
            continue
        # The text height intake measures (router.images.features) picks the OCR scale; "full"
        # reads at full size as before, for comparison.
        height = estimate_text_height(data, sniff(data))
        print(f"{kind:<11} text height {height} px → OCR scale {ocr_scale(height):.2f}")
        per: dict[str, list[float]] = {"pii": [], "injection": [], "faces": [], "nsfw": [], "overall": [], "no-height": [], "cached": []}
        for _ in range(runs):
            image = GuardImage(data, sha256_of(data), "png")  # intake's height not passed: the gate
            start = time.perf_counter()
            asyncio.run(run_guardrails([image], [], cfg, Detectors(reader, faces=faces, nsfw=nsfw)))
            per["no-height"].append((time.perf_counter() - start) * 1000)
            det = Detectors(reader, faces=faces, nsfw=nsfw)
            image = GuardImage(data, sha256_of(data), "png", height)
            start = time.perf_counter()
            out = asyncio.run(run_guardrails([image], [], cfg, det))
            per["overall"].append((time.perf_counter() - start) * 1000)
            for v in out.verdicts:
                per[v.detector].append(v.latency_ms)
            start = time.perf_counter()
            asyncio.run(run_guardrails([image], [], cfg, det))
            per["cached"].append((time.perf_counter() - start) * 1000)
        for name, values in per.items():
            print(f"{kind:<11} {name:<10} {statistics.median(values):8.1f} {pct(values, 0.95):8.1f}")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.guardrails")
    parser.add_argument("--samples", type=int, default=180)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latency-only", action="store_true", help="skip precision/recall")
    parser.add_argument("--kinds", nargs="*", help="1080p kinds to time (default: all)")
    args = parser.parse_args(argv)
    reader = RapidOcrReader()  # no disk cache: every read is a miss
    if args.latency_only:
        latency(reader, args.runs, kinds=args.kinds)
        return
    for label, sizes in (("all sizes", None), ("10-12 px", range(10, 13)), ("14-24 px", range(14, 25))):
        print(f"{'kind':<10} {'tp':>3} {'fp':>3} {'fn':>3} {'precision':>9} {'recall':>7}   ({label})")
        for kind, (tp, fp, fn) in quality(reader, args.samples, sizes).items():
            p = tp / (tp + fp) if tp + fp else float("nan")
            r = tp / (tp + fn) if tp + fn else float("nan")
            print(f"{kind:<10} {tp:>3} {fp:>3} {fn:>3} {p:9.2f} {r:7.2f}")
    hits, docs = clean_fp(reader)
    print(f"clean documents with a finding: {hits}/{docs}")
    sparse_recall(reader)
    faces_check()
    latency(reader, args.runs, kinds=args.kinds)


if __name__ == "__main__":
    main(sys.argv[1:])
