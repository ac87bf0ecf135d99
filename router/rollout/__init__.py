"""Versioned rulesets, the canary split, hot reload and the guard that promotes or rolls back.

Light imports only: the guard (which needs the trace store) is imported from
``router.rollout.guard`` where it is used.
"""

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
)
from router.rollout.memory import InMemoryRuleStore
from router.rollout.policy import NoActiveRuleset, PolicyHolder, RolloutSnapshot
from router.rollout.split import assign_arm, split_key
from router.rollout.store import CorruptPointer, DirectoryRuleStore

__all__ = [
    "CorruptPointer",
    "CorruptVersion",
    "DirectoryRuleStore",
    "InMemoryRuleStore",
    "InvalidRuleset",
    "NoActiveRuleset",
    "Pointer",
    "PointerEvent",
    "PolicyHolder",
    "RolloutConflict",
    "RolloutError",
    "RolloutSnapshot",
    "RuleStore",
    "RuleVersion",
    "UnknownVersion",
    "assign_arm",
    "split_key",
]
