"""What the rule store keeps: version records, the pointer, its history, and the store's errors.

Plain frozen dataclasses with JSON round-trips, shared by every backend and by ``/admin``.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from router.errors import GatewayError

Validate = Callable[[str], list[str]]


class RolloutError(GatewayError):
    """Base of the rule store's refusals; answered by ``/admin`` as OpenAI-shaped errors."""

    status = 400
    code = "rollout_error"
    type = "invalid_request_error"


class InvalidRuleset(RolloutError):
    """The validator found problems; the text was not stored."""

    status = 422
    code = "invalid_ruleset"

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid ruleset: " + "; ".join(self.problems))


class UnknownVersion(RolloutError):
    status = 404
    code = "ruleset_version_not_found"


class CorruptVersion(RolloutError):
    """A stored version no longer matches its recorded hash (cut short, edited by hand)."""

    status = 500
    code = "ruleset_version_corrupt"
    type = "api_error"


class RolloutConflict(RolloutError):
    """The pointer is not in a state that allows the change (no canary, stale generation…)."""

    status = 409
    code = "rollout_conflict"


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _ts(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse_ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class RuleVersion:
    id: str
    parent: str | None
    created_at: datetime
    author: str
    content_hash: str
    note: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "created_at": _ts(self.created_at)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RuleVersion:
        return cls(
            id=str(data["id"]),
            parent=data.get("parent"),
            created_at=datetime.fromisoformat(data["created_at"]),
            author=str(data["author"]),
            content_hash=str(data["content_hash"]),
            note=str(data.get("note") or ""),
            provenance=dict(data.get("provenance") or {}),
        )


@dataclass(frozen=True)
class Pointer:
    """Which version serves traffic. ``generation`` grows by one on every change."""

    active: str | None = None
    canary: str | None = None
    canary_fraction: float = 0.0
    updated_at: datetime | None = None
    generation: int = 0
    canary_started_at: datetime | None = None
    rollout_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "updated_at": _ts(self.updated_at),
            "canary_started_at": _ts(self.canary_started_at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Pointer:
        return cls(
            active=data.get("active"),
            canary=data.get("canary"),
            canary_fraction=float(data.get("canary_fraction") or 0.0),
            updated_at=_parse_ts(data.get("updated_at")),
            generation=int(data.get("generation") or 0),
            canary_started_at=_parse_ts(data.get("canary_started_at")),
            rollout_id=data.get("rollout_id"),
        )


@dataclass(frozen=True)
class PointerEvent:
    """One line of the pointer's history: what changed, who did it and why."""

    ts: datetime
    action: str  # activate | start | promote | rollback | set
    actor: str
    reason: str
    before: Pointer
    after: Pointer

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": _ts(self.ts),
            "action": self.action,
            "actor": self.actor,
            "reason": self.reason,
            "before": self.before.to_json(),
            "after": self.after.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PointerEvent:
        return cls(
            ts=datetime.fromisoformat(data["ts"]),
            action=str(data["action"]),
            actor=str(data.get("actor") or ""),
            reason=str(data.get("reason") or ""),
            before=Pointer.from_json(data["before"]),
            after=Pointer.from_json(data["after"]),
        )


def unified_diff(a_text: str, b_text: str, a_name: str = "a", b_name: str = "b") -> str:
    lines = difflib.unified_diff(
        a_text.splitlines(keepends=True), b_text.splitlines(keepends=True), a_name, b_name
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def format_version_id(number: int) -> str:
    return f"v{number:04d}"


__all__ = [
    "CorruptVersion",
    "InvalidRuleset",
    "Pointer",
    "PointerEvent",
    "RolloutConflict",
    "RolloutError",
    "RuleVersion",
    "UnknownVersion",
    "Validate",
    "content_hash",
    "format_version_id",
    "unified_diff",
]
