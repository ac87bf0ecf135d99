"""Denormals flushed around a model call: set inside the block, the thread restored after."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ocr.fpu import DAZ, FTZ, denormals_flushed, mxcsr

pytestmark = pytest.mark.skipif(mxcsr() is None, reason="needs x86-64 glibc")
STATUS = 0x3F  # exception flags: sticky, set by the arithmetic the tests do


def control() -> int:
    word = mxcsr()
    assert word is not None
    return word & ~STATUS


def subnormal_survives() -> bool:
    """Arithmetic, not the control word: the smallest normal float32 halved."""
    tiny = np.array([np.finfo(np.float32).tiny], dtype=np.float32)
    return bool((tiny / np.float32(2.0))[0] != 0.0)


def test_flushed_inside_restored_after() -> None:
    before = control()
    assert subnormal_survives()
    with denormals_flushed() as applied:
        assert applied
        inside = mxcsr()
        assert inside is not None and inside & FTZ and inside & DAZ
        assert not subnormal_survives()
    assert subnormal_survives()
    assert control() == before


def test_restored_when_the_block_raises() -> None:
    before = control()
    with pytest.raises(RuntimeError), denormals_flushed():
        raise RuntimeError("model failed")
    assert control() == before and subnormal_survives()


def test_applies_to_the_calling_thread_only() -> None:
    seen: dict[str, bool] = {}
    inside, release = threading.Event(), threading.Event()

    def worker() -> None:
        with denormals_flushed():
            seen["worker"] = subnormal_survives()
            inside.set()
            release.wait(5)

    t = threading.Thread(target=worker)
    t.start()
    inside.wait(5)
    seen["main"] = subnormal_survives()
    release.set()
    t.join()
    assert seen == {"worker": False, "main": True}
