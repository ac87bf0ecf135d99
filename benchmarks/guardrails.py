"""Image guardrails: precision/recall per detector on the generated set, false-positive rate on
clean documents, and p50/p95 latency per detector and overall on 1080p images.

    python -m benchmarks.guardrails                 # 36 labelled samples, 5 runs per 1080p kind
    python -m benchmarks.guardrails --samples 12 --runs 3

Detection runs the real stage (:func:`router.guardrails.stage.run_guardrails`) with the real
OCR (rapidocr, disk cache off) so the latency is what an inline request would add on a cache
miss; a second pass over the same image measures the sha256-cache hit.
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
from emulator.ocr import OcrEngine
from router.guardrails.config import GuardrailsConfig, resolve
from router.guardrails.injection import score_injection
from router.guardrails.pii import find_pii
from router.guardrails.stage import Detectors, GuardImage, ocr_scale, run_guardrails, sha256_of
from router.guardrails.testset import CLEAN, FONTS, generate, render
from router.images.features import estimate_text_height
from router.images.sniff import sniff

KINDS = ("card", "email", "phone", "iban", "injection")


def quality(reader: RapidOcrReader, n: int) -> dict[str, tuple[int, int, int]]:
    """(tp, fp, fn) per kind over ``n`` samples, from OCR text → recognizers."""
    counts = {k: [0, 0, 0] for k in KINDS}
    for sample in generate(n):
        text = " ".join(line.text for line in reader.read(sample.data))
        found = {f.kind for f in find_pii(text)}
        if score_injection(text).score >= 0.5:
            found.add("injection")
        truth = set(sample.pii) | ({"injection"} if sample.injection else set())
        for k in KINDS:
            counts[k][0] += k in found and k in truth
            counts[k][1] += k in found and k not in truth
            counts[k][2] += k not in found and k in truth
    return {k: (v[0], v[1], v[2]) for k, v in counts.items()}


def clean_fp(reader: RapidOcrReader) -> tuple[int, int]:
    """(documents with any finding, documents) over clean multi-line documents."""
    hits = 0
    docs = [render(list(CLEAN[i:] + CLEAN[:i]), font_name=FONTS[i % len(FONTS)], size=16, angle=0) for i in range(len(CLEAN))]
    for data in docs:
        text = " ".join(line.text for line in reader.read(data))
        hits += bool(find_pii(text)) or score_injection(text).score >= 0.5
    return hits, len(docs)


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
    return {"screenshot": shot, "photo": buf.getvalue(), "document": doc, "slide": slide}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def latency(reader: RapidOcrReader, runs: int, *, kinds: Sequence[str] | None = None) -> None:
    cfg = resolve(GuardrailsConfig.model_validate({"pii": {"action": "flag", "timeout_ms": 60000}, "injection": {"action": "flag", "timeout_ms": 60000}}))
    print(f"{'image':<11} {'detector':<10} {'p50 ms':>8} {'p95 ms':>8}   (cache miss; overall = stage wall time)")
    for kind, data in hd_images().items():
        if kinds and kind not in kinds:
            continue
        # The text height intake measures (router.images.features) picks the OCR scale; "full"
        # reads at full size as before, for comparison.
        height = estimate_text_height(data, sniff(data))
        print(f"{kind:<11} text height {height} px → OCR scale {ocr_scale(height):.2f}")
        per: dict[str, list[float]] = {"pii": [], "injection": [], "overall": [], "full": [], "cached": []}
        for _ in range(runs):
            image = GuardImage(data, sha256_of(data), "png")
            start = time.perf_counter()
            asyncio.run(run_guardrails([image], [], cfg, Detectors(reader)))
            per["full"].append((time.perf_counter() - start) * 1000)
            det = Detectors(reader)
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
    parser.add_argument("--samples", type=int, default=36)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--latency-only", action="store_true", help="skip precision/recall")
    parser.add_argument("--kinds", nargs="*", help="1080p kinds to time (default: all)")
    args = parser.parse_args(argv)
    reader = RapidOcrReader(OcrEngine(use_cache=False))
    if args.latency_only:
        latency(reader, args.runs, kinds=args.kinds)
        return
    print(f"{'kind':<10} {'tp':>3} {'fp':>3} {'fn':>3} {'precision':>9} {'recall':>7}")
    for kind, (tp, fp, fn) in quality(reader, args.samples).items():
        p = tp / (tp + fp) if tp + fp else float("nan")
        r = tp / (tp + fn) if tp + fn else float("nan")
        print(f"{kind:<10} {tp:>3} {fp:>3} {fn:>3} {p:9.2f} {r:7.2f}")
    hits, docs = clean_fp(reader)
    print(f"clean documents with a finding: {hits}/{docs}")
    latency(reader, args.runs, kinds=args.kinds)


if __name__ == "__main__":
    main(sys.argv[1:])
