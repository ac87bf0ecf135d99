"""Content-addressed image store (opt-in): keeps image bytes for replay and reference-free evals.

Layout ``<root>/<sha[:2]>/<sha>``; writes are atomic (temp file then rename) and idempotent, so
the same image sent a thousand times is stored once. Retention deletes blobs older than N days.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path


class BlobStore:
    def __init__(self, root: str | Path, retention_days: float | None = None) -> None:
        self.root = Path(root)
        self.retention_days = retention_days

    def path_for(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ValueError("not a sha256 hex digest")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes, sha256: str | None = None) -> str:
        digest = sha256 or hashlib.sha256(data).hexdigest()
        path = self.path_for(digest)
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

    def get(self, sha256: str) -> bytes | None:
        try:
            return self.path_for(sha256).read_bytes()
        except (FileNotFoundError, ValueError):
            return None

    def purge_expired(self, now: float | None = None) -> int:
        """Delete blobs older than the retention; returns how many went."""
        if self.retention_days is None or not self.root.exists():
            return 0
        cutoff = (now or time.time()) - self.retention_days * 86400
        removed = 0
        for path in self.root.glob("??/*"):
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        return removed
