"""Deterministic traffic split between the active ruleset, the canary and exploration.

The arm is a pure function of a key: the same request id (or the same team/user, when the
split is sticky) always lands in the same arm, on every gateway replica and after restarts.
The key is hashed with blake2b to a uniform number ``u`` in [0, 1); ``u < canary`` is the
canary arm and the next ``explore`` slice is exploration, so over many keys each arm gets
its fraction of traffic, and raising the canary fraction only moves keys *into* the canary.

    >>> assign_arm("req-1", 0.0)
    'active'
"""

from __future__ import annotations

import hashlib
from typing import Literal

Arm = Literal["active", "canary", "explore"]

_SCALE = float(2**64)


def unit_hash(key: str, salt: str = "") -> float:
    """A uniform number in [0, 1) from ``key``; ``salt`` gives each rollout its own draw."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(salt.encode("utf-8") + b"\x00" + key.encode("utf-8"))
    return int.from_bytes(digest.digest(), "big") / _SCALE


def assign_arm(
    key: str, canary_fraction: float, explore_fraction: float = 0.0, salt: str = ""
) -> Arm:
    """The arm for ``key``. Fractions must be in [0, 1] and sum to at most 1."""
    if not (0.0 <= canary_fraction <= 1.0 and 0.0 <= explore_fraction <= 1.0):
        raise ValueError(f"fractions must be in [0, 1]: canary={canary_fraction}, explore={explore_fraction}")
    if canary_fraction + explore_fraction > 1.0 + 1e-12:
        raise ValueError("canary_fraction + explore_fraction must not exceed 1")
    u = unit_hash(key, salt)
    if u < canary_fraction:
        return "canary"
    if u < canary_fraction + explore_fraction:
        return "explore"
    return "active"


def split_key(
    request_id: str, *, team: str | None = None, user: str | None = None, sticky: bool = False
) -> str:
    """What to hash: the request id, or with ``sticky`` the user (else team) so that one
    caller sees one ruleset for the whole rollout. Falls back to the request id."""
    if sticky:
        if user:
            return f"user:{user}"
        if team:
            return f"team:{team}"
    return f"req:{request_id}"


__all__ = ["Arm", "assign_arm", "split_key", "unit_hash"]
