"""Denormal floats flushed to zero on the calling thread, for the span of a model call.

The OCR models produce activations so close to zero (subnormal float32) that the CPU takes
a slow microcode path for every operation on them. With flush-to-zero (FTZ) and
denormals-are-zero (DAZ) set in the SSE control register the same reads cost about 30 % less
CPU and give the same text (docs/benchmarks.md).

onnxruntime has a session option for this, but it reaches the thread that calls ``run`` only
through a process-wide once: the first session built in the process decides, for the thread
that built it. The emulator and evals build and run their sessions on worker threads, so the flags are
set here instead, around each call, through glibc's ``fegetenv``/``fesetenv`` (the SSE
control word is the ``__mxcsr`` field of x86-64 ``fenv_t``), and the thread's previous
state is restored afterwards. Elsewhere (another CPU or C library) this is a no-op and reads
are just slower.

    >>> with denormals_flushed():  # doctest: +SKIP
    ...     result = model(image)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

FTZ = 1 << 15  # MXCSR flush-to-zero
DAZ = 1 << 6  # MXCSR denormals-are-zero
_FENV_SIZE = 32  # sizeof(fenv_t) on x86-64 glibc
_MXCSR_OFFSET = 28  # offsetof(fenv_t, __mxcsr)


@cache
def _libm() -> Any | None:
    """glibc's fegetenv/fesetenv on x86-64 Linux, or None where the layout is not known."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return None
    if platform.libc_ver()[0] != "glibc":
        return None
    name = ctypes.util.find_library("m")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    lib.fegetenv.argtypes = lib.fesetenv.argtypes = [ctypes.c_void_p]
    lib.fegetenv.restype = lib.fesetenv.restype = ctypes.c_int
    return lib


def mxcsr() -> int | None:
    """This thread's SSE control/status word, or None where it cannot be read."""
    lib = _libm()
    if lib is None:
        return None
    env = ctypes.create_string_buffer(_FENV_SIZE)
    if lib.fegetenv(env) != 0:
        return None
    return int.from_bytes(env.raw[_MXCSR_OFFSET:_MXCSR_OFFSET + 4], "little")


@contextmanager
def denormals_flushed() -> Iterator[bool]:
    """Set FTZ and DAZ on this thread inside the block; yields whether they could be set.
    The thread's whole floating-point environment is restored on exit."""
    lib = _libm()
    saved = ctypes.create_string_buffer(_FENV_SIZE)
    if lib is None or lib.fegetenv(saved) != 0:
        yield False
        return
    flushed = bytearray(saved.raw)
    word = int.from_bytes(flushed[_MXCSR_OFFSET:_MXCSR_OFFSET + 4], "little") | FTZ | DAZ
    flushed[_MXCSR_OFFSET:_MXCSR_OFFSET + 4] = word.to_bytes(4, "little")
    applied = lib.fesetenv(ctypes.create_string_buffer(bytes(flushed), _FENV_SIZE)) == 0
    try:
        yield applied
    finally:
        lib.fesetenv(saved)
