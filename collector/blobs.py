"""The content-addressed blob store's layout: ``<root>/<sha[:2]>/<sha>``, in one place.

The gateway writes image bytes here (opt-in), and the evaluators and the optimizer's replay
read them back; all three go through these functions so the layout cannot drift. Writes are
atomic (temp file then rename) and idempotent: the same image sent a thousand times is
stored once. A name that is not a sha256 hex digest never becomes a path, so a stored value
cannot walk out of the root.

Example::

    digest = write_blob(Path("blobs"), data)
    assert read_blob(Path("blobs"), digest) == data
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

_SHA256 = re.compile(r"[0-9a-f]{64}")


def is_sha256(value: str) -> bool:
    """Whether ``value`` is a lower-case sha256 hex digest (the only names the store holds)."""
    return _SHA256.fullmatch(value) is not None


def blob_path(root: str | Path, sha256: str) -> Path:
    """Where the blob ``sha256`` lives under ``root``; ``ValueError`` for anything but a digest."""
    if not is_sha256(sha256):
        raise ValueError("not a sha256 hex digest")
    return Path(root) / sha256[:2] / sha256


def write_blob(root: str | Path, data: bytes, sha256: str | None = None) -> str:
    """Store ``data`` (atomically, once) and return its digest (``sha256`` when given)."""
    digest = sha256 or hashlib.sha256(data).hexdigest()
    path = blob_path(root, digest)
    if path.exists():
        return digest
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def read_blob(root: str | Path, sha256: str) -> bytes | None:
    """The blob's bytes, or ``None`` when it is missing or ``sha256`` is not a digest."""
    try:
        return blob_path(root, sha256).read_bytes()
    except (FileNotFoundError, ValueError):
        return None


def iter_blobs(root: str | Path) -> list[Path]:
    """Every file in the layout's folders under ``root`` (for retention; a temp file left by
    an interrupted write is one too); empty when there is no root."""
    base = Path(root)
    if not base.exists():
        return []
    return [p for p in base.glob("??/*") if p.is_file()]


__all__ = ["blob_path", "is_sha256", "iter_blobs", "read_blob", "write_blob"]
