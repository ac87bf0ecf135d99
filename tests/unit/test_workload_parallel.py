"""Parallel workload generation: the same files and records whatever the worker count."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.workload import generate_workload

# HEIC and WebP are the encoders most likely to differ between processes; both are in this mix.
MIX = {"sign_photo": 1, "scan": 1, "receipt": 1, "slide": 1}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_workers_write_exactly_what_one_writes(tmp_path: Path) -> None:
    ticks: list[int] = []
    one = generate_workload(6, seed=20, out_dir=tmp_path / "one", mix=MIX)
    two = generate_workload(6, seed=20, out_dir=tmp_path / "two", mix=MIX, workers=2, progress=ticks.append)
    assert one == two
    assert [r["id"] for r in two] == [f"wl-s20-{i:05d}" for i in range(1, 7)]
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    assert {r["format"] for r in two} == {"png", "jpeg", "webp", "heic"} and len(_files(tmp_path / "two")) == 7
    assert ticks == [1] * 6


def test_progress_counts_every_item_inline(tmp_path: Path) -> None:
    ticks: list[int] = []
    generate_workload(3, seed=1, out_dir=tmp_path, mix=MIX, progress=ticks.append)
    assert sum(ticks) == 3


@pytest.mark.parametrize("workers", [0, -2])
def test_refuses_no_workers(tmp_path: Path, workers: int) -> None:
    with pytest.raises(ValueError, match="workers must be >= 1"):
        generate_workload(2, seed=1, out_dir=tmp_path, workers=workers)
