"""Image degradations that make a page "unclean": textured backgrounds, skew, sensor noise.

Pure functions of (image, numpy Generator, parameters) so a seed reproduces them exactly.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter


def add_noise(img: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    # float32 draws: half the memory traffic of float64 normals, same distribution
    noise = rng.standard_normal(size=arr.shape, dtype=np.float32)
    noise *= np.float32(sigma)
    noise += arr
    np.clip(noise, 0, 255, out=noise)
    return Image.fromarray(noise.astype(np.uint8), mode=img.mode)


def texture(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A wall/pavement-like background: blotchy low-frequency colour, bricks and grain."""
    w, h = size
    base = rng.uniform(60, 200, size=3)
    grid = (max(2, h // 40), max(2, w // 40))
    coarse = rng.normal(0.0, 28.0, size=(*grid, 1)) + rng.normal(0.0, 6.0, size=(*grid, 3))
    blotch = np.asarray(
        Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC),
        dtype=np.float32,
    ) - 128.0
    arr = base[None, None, :] + blotch
    brick_h = int(rng.integers(18, 48))
    brick_w = brick_h * 2
    mortar = np.zeros((h, w), dtype=bool)
    mortar[::brick_h, :] = True
    for r in range(0, h, brick_h):
        shift = (r // brick_h % 2) * brick_w // 2
        mortar[r : r + brick_h, shift::brick_w] = True
    arr[mortar] *= 0.75
    arr += rng.normal(0.0, 10.0, size=arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="RGB")


def sign_photo(plate: Image.Image, size: tuple[int, int], rng: np.random.Generator,
               angle: float, blur: float, sigma: float) -> Image.Image:
    """Put a sign plate, slightly rotated, on a textured wall and add camera blur and noise."""
    bg = texture(size, rng)
    rotated = plate.convert("RGBA").rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    x = (size[0] - rotated.width) // 2 + int(rng.integers(-size[0] // 20, size[0] // 20 + 1))
    y = (size[1] - rotated.height) // 2 + int(rng.integers(-size[1] // 20, size[1] // 20 + 1))
    x = min(max(0, x), max(0, size[0] - rotated.width))
    y = min(max(0, y), max(0, size[1] - rotated.height))
    bg.paste(rotated, (x, y), rotated)
    if blur > 0:
        bg = bg.filter(ImageFilter.GaussianBlur(blur))
    return add_noise(bg, rng, sigma)


def scan(page: Image.Image, rng: np.random.Generator, angle: float, sigma: float,
         gray: bool) -> Image.Image:
    """A skewed flatbed scan: rotate with a grey scanner bed showing, then grain and softness."""
    bed = (int(rng.integers(150, 200)),) * 3
    out = page.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=bed)
    out = out.filter(ImageFilter.GaussianBlur(0.5))
    if gray:
        out = out.convert("L").convert("RGB")
    return add_noise(out, rng, sigma)
