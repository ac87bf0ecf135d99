"""The rule store on a plain directory, safe for several processes on one machine.

Layout::

    root/versions/v0001.yaml        the ruleset text, written once
    root/versions/v0001.meta.json   RuleVersion (author, parent, sha256 …), written after the text
    root/pointer.json               the Pointer, replaced atomically (temp file, fsync, rename)
    root/history.jsonl              one PointerEvent per line, append-only
    root/.lock                      flock'ed by every writer

A version exists once its metadata file exists; both files are created with a hard link
from a fsynced temp file, which fails rather than overwrite, so nothing is ever rewritten.
The contract (and its concurrency rules) is :class:`router.rollout.base.RuleStore`.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from collector.semconv import utc_now
from router.rollout.base import (
    CorruptVersion,
    InvalidRuleset,
    Pointer,
    PointerEvent,
    RolloutConflict,
    RolloutError,
    RuleStore,
    RuleVersion,
    UnknownVersion,
    Validate,
    content_hash,
    format_version_id,
    unified_diff,
)

log = logging.getLogger(__name__)

_ID = re.compile(r"^v(\d{4,})$")
_FILE = re.compile(r"^v(\d{4,})\.(?:yaml|meta\.json)$")


class CorruptPointer(RolloutError):
    status = 500
    code = "rollout_pointer_corrupt"
    type = "api_error"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(folder: Path, name: str, data: bytes) -> Path:
    tmp = folder / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return tmp


def write_new(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` completely or not at all; never overwrite."""
    tmp = _write_temp(path.parent, path.name, data)
    try:
        os.link(tmp, path)  # atomic, and refuses an existing name
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def replace_atomically(path: Path, data: bytes) -> None:
    """Readers see the old or the new content, never a part of either."""
    tmp = _write_temp(path.parent, path.name, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


class DirectoryRuleStore(RuleStore):
    """Example::

    store = DirectoryRuleStore("/var/lib/aperture/rules", validate=my_validator)
    v = store.propose(text, author="optimizer", provenance={"study": "s1", "trial": 42})
    store.start_canary(v.id, 0.1)
    """

    def __init__(self, root: str | os.PathLike[str], validate: Validate | None = None) -> None:
        super().__init__(validate)
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.pointer_path = self.root / "pointer.json"
        self.history_path = self.root / "history.jsonl"
        self.lock_path = self.root / ".lock"
        self.versions_dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive across processes and threads (flock is per open file description)."""
        with open(self.lock_path, "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # -- versions --------------------------------------------------------------------------
    def _next_number(self) -> int:
        numbers = [int(m.group(1)) for p in self.versions_dir.iterdir() if (m := _FILE.match(p.name))]
        return max(numbers, default=0) + 1

    def _write_version(self, text: str, make: Callable[[str], RuleVersion]) -> RuleVersion:
        with self.lock():
            version = make(format_version_id(self._next_number()))
            write_new(self.versions_dir / f"{version.id}.yaml", text.encode("utf-8"))
            meta = json.dumps(version.to_json(), indent=2, sort_keys=True).encode("utf-8")
            write_new(self.versions_dir / f"{version.id}.meta.json", meta)
        return version

    def _meta(self, version_id: str) -> RuleVersion:
        if not _ID.match(version_id):
            raise UnknownVersion(f"not a version id: {version_id!r}", param="version")
        path = self.versions_dir / f"{version_id}.meta.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            version = RuleVersion.from_json(data)
        except FileNotFoundError:
            raise UnknownVersion(f"no ruleset version {version_id}", param="version") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptVersion(f"metadata of {version_id} is unreadable: {exc}") from exc
        if version.id != version_id:
            raise CorruptVersion(f"metadata of {version_id} names {version.id}")
        return version

    def get(self, version_id: str) -> tuple[RuleVersion, str]:
        version = self._meta(version_id)
        try:
            raw = (self.versions_dir / f"{version_id}.yaml").read_bytes()
        except FileNotFoundError:
            raise CorruptVersion(f"text of {version_id} is missing") from None
        if hashlib.sha256(raw).hexdigest() != version.content_hash:
            raise CorruptVersion(
                f"text of {version_id} does not match its sha256 {version.content_hash[:12]}…"
                " (truncated or edited); refusing it"
            )
        return version, raw.decode("utf-8")

    def list(self) -> list[RuleVersion]:
        out = []
        metas = sorted(self.versions_dir.glob("v*.meta.json"), key=lambda p: int(p.name[1:].split(".")[0]))
        for path in metas:
            try:
                out.append(self._meta(path.name.split(".")[0]))
            except RolloutError as exc:
                log.warning("skipping ruleset version %s: %s", path.name, exc.message)
        return out

    # -- pointer ---------------------------------------------------------------------------
    def pointer(self) -> Pointer:
        try:
            raw = self.pointer_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Pointer()
        try:
            return Pointer.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptPointer(f"{self.pointer_path} is unreadable: {exc}") from exc

    def update_pointer(
        self, change: Callable[[Pointer], Pointer], *, action: str, actor: str, reason: str
    ) -> Pointer:
        with self.lock():
            before = self._pointer_for_update()
            after = replace(change(before), generation=before.generation + 1, updated_at=utc_now())
            data = json.dumps(after.to_json(), indent=2, sort_keys=True).encode("utf-8")
            replace_atomically(self.pointer_path, data)
            event = PointerEvent(utc_now(), action, actor, reason, before, after)
            with open(self.history_path, "ab") as fh:
                fh.write(json.dumps(event.to_json(), sort_keys=True).encode("utf-8") + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
        return after

    def _pointer_for_update(self) -> Pointer:
        """The pointer, or, if its file was damaged, the last state the history recorded, so
        that an explicit ``activate`` / ``rollback(to=…)`` repairs the store."""
        try:
            return self.pointer()
        except CorruptPointer as exc:
            events = self.history()
            log.warning("%s; rebuilding from the history (%d events)", exc.message, len(events))
            return events[-1].after if events else Pointer()

    def history(self) -> builtins.list[PointerEvent]:
        try:
            lines = self.history_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            try:
                events.append(PointerEvent.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                log.warning("skipping unreadable history line in %s", self.history_path)
        return events


__all__ = [
    "CorruptPointer",
    "CorruptVersion",
    "DirectoryRuleStore",
    "InvalidRuleset",
    "Pointer",
    "PointerEvent",
    "RolloutConflict",
    "RolloutError",
    "RuleStore",
    "RuleVersion",
    "UnknownVersion",
    "Validate",
    "content_hash",
    "unified_diff",
]
