"""One active controller per deployment: a renewable lease kept beside the rule store.

The lease is a small JSON file (owner, expiry) read and rewritten under an exclusive
``flock`` on a sibling lock file, so two controllers on one machine (or on hosts sharing the
rule store's filesystem with working locks) never both believe they hold it. A holder renews
it every tick, and in the background while a long step runs (a search can outlast the lease);
one that dies stops renewing and another takes over once it expires. Before an act that must
not happen twice (a proposal, a canary, a decision), the holder confirms it still holds the
lease: a controller that was stalled past its expiry stops instead of acting beside the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from router.rollout.store import replace_atomically


class LeaseLost(RuntimeError):
    """Another controller took the lease: the step in progress must not act."""


@dataclass(frozen=True)
class LeaseHolder:
    owner: str
    expires_at: float  # Unix seconds


class FileLease:
    """Example::

    lease = FileLease(Path("rules/autopilot"), owner="host-a:4242", ttl_s=120)
    if lease.acquire():      # also renews when we already hold it
        ...                  # act
    lease.release()
    """

    def __init__(self, folder: Path, owner: str, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.folder = folder
        self.owner = owner
        self.ttl_s = ttl_s
        self.clock = clock
        self.path = folder / "lease.json"
        self._lock_path = folder / ".lease.lock"
        folder.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def holder(self) -> LeaseHolder | None:
        """Who holds the lease now (None when nobody or when it expired)."""
        try:
            data = json.loads(self.path.read_text())
            held = LeaseHolder(str(data["owner"]), float(data["expires_at"]))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None
        return held if held.expires_at > self.clock() else None

    def acquire(self) -> bool:
        """Take or renew the lease; False when another live owner holds it."""
        with self._locked():
            held = self.holder()
            if held is not None and held.owner != self.owner:
                return False
            payload = {"owner": self.owner, "expires_at": self.clock() + self.ttl_s}
            replace_atomically(self.path, json.dumps(payload).encode())
            return True

    def release(self) -> None:
        with self._locked():
            held = self.holder()
            if held is not None and held.owner == self.owner:
                self.path.unlink(missing_ok=True)

    def confirm(self) -> None:
        """Renew now, or raise :class:`LeaseLost` when another controller holds the lease."""
        if not self.acquire():
            holder = self.holder()
            raise LeaseLost(f"lease taken by {holder.owner if holder else 'another controller'}")

    @contextlib.contextmanager
    def kept(self, every_s: float | None = None) -> Iterator[None]:
        """Renew the lease from a background thread (every third of its TTL) while the block
        runs, so a long step does not let it lapse. A renewal that finds another owner stops
        renewing; the block learns it at its next :meth:`confirm`."""
        stop = threading.Event()
        period = every_s if every_s is not None else self.ttl_s / 3

        def renew() -> None:
            while not stop.wait(period):
                if not self.acquire():
                    return

        thread = threading.Thread(target=renew, name="autopilot-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
