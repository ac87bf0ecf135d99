"""What the demo's two heavy stages cost: workload generation and cold OCR reads.

    python -m benchmarks.demo_stages                          # 30 images, seed 11
    python -m benchmarks.demo_stages --n 60 --details high low --workers 1 2

1. Generation: `generate_workload(n, seed, workers=w)` into a temporary directory, wall
   time and CPU (this process plus its worker processes).
2. OCR: each generated image read through `emulator.vision.see` at the size gpt-4o would
   see it for each detail level (OpenAI tile rule), with an empty temporary cache, so every
   read runs the model. CPU-s per image is what one read costs whatever else the machine does.
   Each read is repeated with denormals not flushed (`OcrEngine(flush_denormals=False)`):
   the ratio and whether the lines are identical.
3. Parallel reads: the same images split over two threads, each with its own engine (what
   the emulator does with `ocr_workers=2`); parallelism = CPU-s / wall-s (2.0 is ideal on an
   idle 2-core machine; less when other processes share the cores).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path

from emulator.ocr import OcrEngine
from emulator.vision import decode, profile_for, see
from emulator.workload import generate_workload
from router.tokens import TokenRule, effective_size


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def bench_generation(n: int, seed: int, workers: int) -> tuple[float, float]:
    """(wall s, CPU s) of generating `n` images with `workers` processes."""
    with tempfile.TemporaryDirectory() as tmp:
        t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
        generate_workload(n, seed, Path(tmp), workers=workers)
        return time.perf_counter() - t0, time.process_time() - c0 + _children_cpu() - k0


def _inputs(n: int, seed: int, details: list[str]) -> list[tuple[bytes, tuple[int, int], str]]:
    rule = TokenRule(algo="tile")
    with tempfile.TemporaryDirectory() as tmp:
        records = generate_workload(n, seed, Path(tmp), workers=2)
        out = []
        for r in records:
            data = (Path(tmp) / r["file"]).read_bytes()
            for d in details:
                out.append((data, effective_size(rule, r["width"], r["height"], d), d))
        return out


def bench_ocr(inputs: list[tuple[bytes, tuple[int, int], str]]) -> tuple[dict[str, list[float]], dict[str, list[float]], int]:
    """CPU-s per cold read by detail level, with denormals flushed and without (each image
    read both ways, one after the other), and how many reads gave the same lines."""
    profile = profile_for("gpt-4o")
    cpu: dict[str, list[float]] = {}
    plain_cpu: dict[str, list[float]] = {}
    same = 0
    with tempfile.TemporaryDirectory() as tmp:
        engine = OcrEngine(cache_dir=Path(tmp) / "flushed")
        plain = OcrEngine(cache_dir=Path(tmp) / "plain", flush_denormals=False)
        for e in (engine, plain):
            e.read(decode(inputs[0][0]).resize((64, 64)), key="warm-up")  # loads the model
        for data, size, detail in inputs:
            t = time.thread_time()
            lines = see(data, size, profile, engine)
            cpu.setdefault(detail, []).append(time.thread_time() - t)
            t = time.thread_time()
            same += see(data, size, profile, plain) == lines
            plain_cpu.setdefault(detail, []).append(time.thread_time() - t)
    return cpu, plain_cpu, same


def bench_parallel(inputs: list[tuple[bytes, tuple[int, int], str]]) -> tuple[float, float]:
    """(wall s, CPU s) of reading `inputs` cold on two threads with one engine each."""
    profile = profile_for("gpt-4o")
    with tempfile.TemporaryDirectory() as tmp:
        engines = [OcrEngine(cache_dir=Path(tmp) / str(i)) for i in range(2)]
        for e in engines:
            e.read(decode(inputs[0][0]).resize((64, 64)), key="warm-up")
        halves = [inputs[0::2], inputs[1::2]]

        def work(i: int) -> None:
            for data, size, _ in halves[i]:
                see(data, size, profile, engines[i])

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        t0, c0 = time.perf_counter(), time.process_time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=30)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--gen-n", type=int, default=60, help="images for the generation timing")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--details", nargs="+", default=["high", "low"])
    p.add_argument("--skip", nargs="*", default=[], choices=["generation", "ocr", "parallel"])
    a = p.parse_args(argv)
    if "generation" not in a.skip:
        for w in a.workers:
            wall, cpu = bench_generation(a.gen_n, a.seed, w)
            print(f"generate {a.gen_n} images, workers={w}: {wall:.1f}s wall, {cpu:.1f} CPU-s "
                  f"({cpu / max(1, a.gen_n):.3f} CPU-s/image)", flush=True)
    inputs = _inputs(a.n, a.seed, a.details) if {"ocr", "parallel"} - set(a.skip) else []
    if "ocr" not in a.skip:
        flushed, plain, same = bench_ocr(inputs)
        for detail, per in flushed.items():
            print(f"OCR cold at gpt-4o {detail}: {statistics.mean(per):.2f} CPU-s/image mean, "
                  f"median {statistics.median(per):.2f}, max {max(per):.2f} over {len(per)} images; "
                  f"without flushing denormals {statistics.mean(plain[detail]):.2f} "
                  f"(flushed/plain {sum(per) / sum(plain[detail]):.2f})", flush=True)
        print(f"same lines with and without flushing: {same}/{len(inputs)} reads", flush=True)
    if "parallel" not in a.skip:
        wall, used = bench_parallel(inputs)
        print(f"OCR on 2 threads: {len(inputs)} reads in {wall:.1f}s wall, {used:.1f} CPU-s, "
              f"parallelism {used / wall:.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
