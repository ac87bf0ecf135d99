"""Who is calling: virtual keys from the config, checked in constant time.

A client sends ``Authorization: Bearer <virtual key>``; the config's ``virtual_keys`` maps each
key to its team and limits. The key itself never leaves this module: everything downstream
(spans, logs, rate limits, budgets) sees only ``key_id``, a short hash.

With no virtual keys configured the gateway runs in *open mode* (local use): any bearer token,
or none, is accepted as team ``default``. The app logs :func:`open_mode_warning` once at start.

Example::

    principal = authenticate(request.headers.get("authorization"), config)
    principal.team, principal.key_id   # "search", "vk_3f2a9c1b7d4e"
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from router.errors import AuthenticationFailed

if TYPE_CHECKING:
    from router.config import AppConfig

OPEN_TEAM = "default"
ANONYMOUS_KEY_ID = "anonymous"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: the hash of its key, its team and its own limits (``None`` = none)."""

    key_id: str
    team: str
    rpm: int | None = None
    tpm: int | None = None
    daily_budget_usd: float | None = None
    open_mode: bool = False


def key_id(key: str) -> str:
    """A stable, short, non-reversible name for a key (safe in spans, logs and metrics)."""
    return "vk_" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None`` when absent/empty.

    Raises :class:`AuthenticationFailed` when the header uses another scheme.
    """
    if authorization is None or not authorization.strip():
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthenticationFailed(
            "the Authorization header must be 'Bearer <key>'", param="authorization"
        )
    token = token.strip()
    return token or None


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


@lru_cache(maxsize=8)
def _digests(keys: tuple[str, ...]) -> tuple[tuple[bytes, str], ...]:
    """Configured keys' digests, computed once per key set rather than on every request."""
    return tuple((_digest(k), k) for k in keys)


def authenticate(authorization: str | None, config: AppConfig) -> Principal:
    """The :class:`Principal` for an ``Authorization`` header value, or :class:`AuthenticationFailed`.

    Every configured key is compared (no early exit, fixed-length digests) so the time taken
    says nothing about how close a guess was.
    """
    if config.open_mode:
        try:
            token = bearer_token(authorization)
        except AuthenticationFailed:
            token = None  # open mode takes anything, whatever the scheme
        return Principal(
            key_id=key_id(token) if token else ANONYMOUS_KEY_ID, team=OPEN_TEAM, open_mode=True
        )

    token = bearer_token(authorization)
    if token is None:
        raise AuthenticationFailed(
            "missing API key: send 'Authorization: Bearer <key>'", param="authorization"
        )
    presented = _digest(token)
    match: str | None = None
    for digest, candidate in _digests(tuple(config.virtual_keys)):
        if hmac.compare_digest(presented, digest):
            match = candidate
    if match is None:
        raise AuthenticationFailed("invalid API key", param="authorization")
    vk = config.virtual_keys[match]
    return Principal(
        key_id=key_id(match),
        team=vk.team,
        rpm=vk.rpm,
        tpm=vk.tpm,
        daily_budget_usd=vk.daily_budget_usd,
    )


def open_mode_warning() -> str:
    """What the app logs once at start when no virtual keys are configured."""
    return (
        "OPEN MODE: no virtual_keys are configured, so every request is accepted (with any bearer "
        "token or none) as team 'default', without per-key limits. Use this only on a trusted "
        "machine; add virtual_keys to the config before exposing the gateway."
    )
