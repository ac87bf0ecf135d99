"""ocr: the one wrapper around the local OCR model (rapidocr), shared by the emulator and evals.

A leaf: it imports no other project package, so both the emulator and evals (which may not
import each other) can use it.

- ``ocr.engine``: ``OcrEngine`` (rapidocr behind a lock, with denormals flushed and a disk
  cache whose key includes the settings), ``OcrBox``, ``default_cache_dir``;
- ``ocr.fpu``: ``denormals_flushed``, the flush-to-zero context for model calls.
"""
