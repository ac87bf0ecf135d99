"""How long header sniffing takes, against a full Pillow decode of the same file.

Goal: <= 20 us per sniff and flat in file size (50 KB vs 20 MB), because it runs on every
image of every request before routing. Images are random noise (incompressible), so
the byte sizes are real and a decode has real work to do.

    python -m benchmarks.sniff            # 50 KB and 20 MB, PNG / JPEG / WebP (+ others)
    python -m benchmarks.sniff --quick    # 50 KB only
"""

from __future__ import annotations

import argparse
import io
import math
import timeit
from collections.abc import Sequence

import numpy as np
from PIL import Image

from router.images.pil import register_heif
from router.images.sniff import sniff

KB, MB = 1000, 1000 * 1000
MAIN_FORMATS = ("PNG", "JPEG", "WEBP")
OTHER_FORMATS = ("GIF", "BMP", "TIFF", "AVIF", "HEIF")


def make_image(fmt: str, target_bytes: int, seed: int = 0) -> bytes:
    """A noise image of roughly ``target_bytes`` in ``fmt`` (side found from a probe)."""
    if fmt == "HEIF":
        register_heif()
    rng = np.random.default_rng(seed)
    mode_channels = 1 if fmt == "GIF" else 3

    def encode(side: int) -> bytes:
        shape = (side, side, mode_channels) if mode_channels == 3 else (side, side)
        im = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
        buf = io.BytesIO()
        kwargs = {"quality": 95} if fmt in ("JPEG", "WEBP", "AVIF", "HEIF") else {}
        im.save(buf, fmt, **kwargs)
        return buf.getvalue()

    probe_side = 128
    per_pixel = len(encode(probe_side)) / probe_side**2
    side = max(16, int(math.sqrt(target_bytes / per_pixel)))
    return encode(min(side, 16383))


def per_call_us(fn: object, min_seconds: float = 0.2) -> float:
    timer = timeit.Timer(fn)  # type: ignore[arg-type]
    number, elapsed = timer.autorange()
    while elapsed < min_seconds:
        number *= 2
        elapsed = timer.timeit(number)
    return min(timer.repeat(repeat=3, number=number)) / number * 1e6


def decode_ms(data: bytes) -> float:
    def run() -> None:
        with Image.open(io.BytesIO(data)) as im:
            im.load()

    runs = 3 if len(data) > MB else 20
    return min(timeit.repeat(run, number=1, repeat=runs)) * 1e3


def rows(formats: Sequence[str], sizes: Sequence[int]) -> list[tuple[str, int, str, float, float]]:
    out = []
    for fmt in formats:
        for target in sizes:
            data = make_image(fmt, target)
            header = sniff(data)
            us = per_call_us(lambda data=data: sniff(data))
            ms = decode_ms(data)
            out.append((fmt, len(data), f"{header.width}x{header.height}", us, ms))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sniff", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="50 KB files only")
    args = parser.parse_args(argv)
    sizes = [50 * KB] if args.quick else [50 * KB, 20 * MB]
    table = rows(MAIN_FORMATS, sizes) + rows(OTHER_FORMATS, [50 * KB])
    print(
        f"{'format':<6} {'bytes':>11} {'pixels':>11} {'sniff us':>9} {'decode ms':>10} {'decode/sniff':>13}"
    )
    for fmt, nbytes, dims, us, ms in table:
        print(f"{fmt:<6} {nbytes:>11,} {dims:>11} {us:>9.2f} {ms:>10.2f} {ms * 1e3 / us:>12,.0f}x")
    for fmt in MAIN_FORMATS:
        timings = [us for f, _, _, us, _ in table if f == fmt]
        if len(timings) == 2:
            print(f"{fmt}: 20 MB / 50 KB sniff time = {timings[1] / timings[0]:.2f} (flat = 1.0)")


if __name__ == "__main__":
    main()
