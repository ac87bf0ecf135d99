"""When to try an upstream again, and how long to wait first. Pure: no clock, no sleeping.

Backoff is exponential with *full jitter* (a uniform draw between 0 and the capped exponential),
which spreads a burst of retries from many requests instead of synchronising them. A server's
own hint wins over backoff: ``retry-after-ms``, then ``retry-after`` (seconds or an HTTP-date),
or Gemini's ``google.rpc.RetryInfo.retryDelay``, each read by the provider adapter
(``router.providers.classify``) into ``UpstreamError.retry_after_s``. A hint longer than ``max_wait_s`` means "fail over to the next
route now" rather than hold the client's request that long.

Example::

    policy = RetryPolicy(max_retries=2, base_s=0.25, max_s=8.0)
    delay = retry_delay(error, attempt=0, policy=policy, rng=random.Random())
    if delay is None: ...  # do not retry this route
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from router.errors import GatewayError

if TYPE_CHECKING:
    from router.config import ProviderConfig

# Statuses no retry can fix: the request or our credentials are wrong for this upstream.
TERMINAL_STATUSES = frozenset({400, 401, 402, 403, 404, 405, 413, 415, 422})
# Provider codes that look like rate limits but will keep failing (providers.md §5).
TERMINAL_PROVIDER_CODES = frozenset(
    {
        "insufficient_quota",
        "billing_error",
        "enforced_spend_limit_reached",
        "billing_hard_limit_reached",
        "quota_per_day",
    }
)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry one route.

    ``max_retries`` counts retries after the first try (2 → at most 3 tries). ``max_wait_s``
    caps how long a server's Retry-After is honoured before failing over instead.
    """

    max_retries: int = 2
    base_s: float = 0.25
    max_s: float = 8.0
    jitter: Literal["full", "none"] = "full"
    max_wait_s: float = 30.0

    def __post_init__(self) -> None:
        if self.max_retries < 0 or self.base_s < 0 or self.max_s < 0 or self.max_wait_s < 0:
            raise ValueError("retry policy values must be >= 0")

    @classmethod
    def from_provider(cls, cfg: ProviderConfig, *, max_wait_s: float = 30.0) -> RetryPolicy:
        return cls(
            max_retries=cfg.max_retries,
            base_s=cfg.backoff_base_s,
            max_s=cfg.backoff_max_s,
            max_wait_s=max_wait_s,
        )


def backoff_cap(attempt: int, policy: RetryPolicy) -> float:
    """The ceiling of the ``attempt``-th retry's delay (0-based): ``min(max_s, base_s·2^attempt)``."""
    exponent = min(max(attempt, 0), 1024)
    try:
        raw = policy.base_s * math.ldexp(1.0, exponent)
    except OverflowError:
        raw = math.inf
    return min(policy.max_s, raw)


def backoff_delay(attempt: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based), with full jitter."""
    cap = backoff_cap(attempt, policy)
    if policy.jitter == "none":
        return cap
    return rng.uniform(0.0, cap)


def is_retryable(error: BaseException) -> bool:
    """Would trying the same route again possibly succeed?

    Only upstream failures that say so are (``UpstreamError.retryable``); our own refusals
    (budget, auth, bad request) never are, and neither are the terminal statuses and quota codes
    even if an adapter were to mark them retryable.
    """
    if not isinstance(error, GatewayError) or not getattr(error, "retryable", False):
        return False
    if getattr(error, "image_rejected", False):
        return False
    if getattr(error, "provider_code", None) in TERMINAL_PROVIDER_CODES:
        return False
    # Transport errors carry 502/504 and are not in the terminal set.
    return error.status not in TERMINAL_STATUSES


def retry_delay(
    error: BaseException, attempt: int, policy: RetryPolicy, rng: random.Random
) -> float | None:
    """Seconds to wait before retrying after ``error`` on retry number ``attempt`` (0-based).

    ``None`` means do not retry this route: the error is terminal, the retries are used up, or
    the server asked for a wait longer than ``policy.max_wait_s`` (better to fail over).
    """
    if attempt >= policy.max_retries or not is_retryable(error):
        return None
    hint = getattr(error, "retry_after_s", None)
    if hint is not None and math.isfinite(hint):
        if hint > policy.max_wait_s:
            return None
        return max(0.0, float(hint))
    return backoff_delay(attempt, policy, rng)
