"""Content-addressed image store (opt-in): keeps image bytes for replay and reference-free evals.

The layout (``<root>/<sha[:2]>/<sha>``, atomic idempotent writes) is :mod:`collector.blobs`,
which the evaluators and replay read through too. Retention deletes blobs older than N days.
"""

from __future__ import annotations

import time
from pathlib import Path

from collector.blobs import blob_path, iter_blobs, read_blob, write_blob


class BlobStore:
    def __init__(self, root: str | Path, retention_days: float | None = None) -> None:
        self.root = Path(root)
        self.retention_days = retention_days

    def path_for(self, sha256: str) -> Path:
        return blob_path(self.root, sha256)

    def put(self, data: bytes, sha256: str | None = None) -> str:
        return write_blob(self.root, data, sha256)

    def get(self, sha256: str) -> bytes | None:
        return read_blob(self.root, sha256)

    def purge_expired(self, now: float | None = None) -> int:
        """Delete blobs older than the retention; returns how many went."""
        if self.retention_days is None:
            return 0
        cutoff = (now or time.time()) - self.retention_days * 86400
        removed = 0
        for path in iter_blobs(self.root):
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
