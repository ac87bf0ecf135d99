"""OCR quality versus resolution: character error rate per (body font px, effective width),
and OCR seconds per image.

    python -m benchmarks.ocr_quality                       # full grid (a few minutes on 2 cores)
    python -m benchmarks.ocr_quality --fonts 12 28 --widths 960 640 400

Each page is a generated table report about 1600 px wide, drawn at one body font size,
resized to each width (keeping the aspect ratio) and read by the real OCR model with the
cache off, so the timings are model time. The "instant" row times the same pipeline with
the model switched off (decode + resize only).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import jiwer

from emulator.ocr import OcrEngine
from emulator.vision import FALLBACK_PROFILE, see
from emulator.workload import generate_item
from emulator.workload.render import cap_height

DEFAULT_FONTS = (8, 10, 12, 16, 20, 28)
DEFAULT_WIDTHS = (1600, 1280, 960, 768, 640, 512, 400)


def run(fonts: tuple[int, ...], widths: tuple[int, ...], kind: str, long_side: int) -> int:
    engine = OcrEngine(use_cache=False)
    instant = OcrEngine(instant=True)
    cer: dict[tuple[int, int], float] = {}
    seconds: dict[int, list[float]] = {w: [] for w in widths}
    cpu: list[float] = []
    instant_s: list[float] = []
    pixels: dict[int, int] = {}
    for f in fonts:
        item = generate_item(kind, seed=1, index=1, font_px=f, long_side=long_side, format="png")
        rec = item.record
        for w in widths:
            size = (w, round(rec["height"] * w / rec["width"]))
            pixels[w] = size[0] * size[1]
            t0, c0 = time.perf_counter(), time.process_time()
            lines = see(item.data, size, FALLBACK_PROFILE, engine)
            seconds[w].append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            t0 = time.perf_counter()
            see(item.data, size, FALLBACK_PROFILE, instant)
            instant_s.append(time.perf_counter() - t0)
            cer[(f, w)] = jiwer.cer(rec["text"], "\n".join(x.text for x in lines))
            print(f"  font {f:>2}px width {w:>4}: CER {cer[(f, w)]:.3f} "
                  f"({seconds[w][-1]:.2f}s)", file=sys.stderr, flush=True)

    print(f"\nCER by body font (cap height) x effective width, kind={kind}, page long side {long_side}px")
    print("font px (cap) | " + " | ".join(f"{w:>5}" for w in widths))
    print("-" * (16 + 8 * len(widths)))
    for f in fonts:
        cells = " | ".join(f"{cer[(f, w)]:5.3f}" for w in widths)
        print(f"{f:>7} ({cap_height(f):>4.1f}) | {cells}")
    print("\nOCR seconds per image (median over fonts, model only, 1 onnxruntime thread)")
    for w in widths:
        print(f"  width {w:>4} ({pixels[w] / 1e6:.2f} MP): {statistics.median(seconds[w]):.2f}s")
    every = [s for v in seconds.values() for s in v]
    print(f"  all: mean {statistics.mean(every):.2f}s wall, {statistics.mean(cpu):.2f}s CPU, "
          f"max {max(every):.2f}s wall over {len(every)} images (wall includes waiting for a "
          "busy machine; CPU time is what one image costs)")
    print(f"  instant engine (decode + resize only): mean {statistics.mean(instant_s) * 1000:.1f}ms")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fonts", type=int, nargs="+", default=list(DEFAULT_FONTS))
    p.add_argument("--widths", type=int, nargs="+", default=list(DEFAULT_WIDTHS))
    p.add_argument("--kind", default="table")
    p.add_argument("--long-side", type=int, default=1600)
    a = p.parse_args(argv)
    return run(tuple(a.fonts), tuple(a.widths), a.kind, a.long_side)


if __name__ == "__main__":
    raise SystemExit(main())
