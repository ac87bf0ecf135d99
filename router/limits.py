"""Per-key requests-per-minute and tokens-per-minute limits.

The algorithm is **GCRA** (the generic cell rate algorithm, i.e. a token bucket that holds one
minute's allowance and refills continuously at ``limit / 60`` per second). Against a sliding log
it needs O(1) memory per key and lets a request of any token weight through in one step; a
caller that was idle for a minute may burst one minute's allowance, as with OpenAI's limits.

Tokens are whatever the caller counts (the image-aware estimate of the request); once the
provider reports billed usage, :meth:`RateLimiter.adjust` corrects the difference.

Not thread-safe by design: every method is synchronous with no awaits, so on one event loop a
check-and-take is atomic. A refused request takes nothing from either bucket.

Example::

    limiter = RateLimiter()
    limiter.check(principal, tokens=1200)   # raises RateLimited with a Retry-After header
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from router.errors import RateLimited
from router.keys import Principal

WINDOW_S = 60.0


@dataclass
class _Bucket:
    limit: float  # capacity: one window's allowance
    level: float  # what is left now
    updated: float

    def refill(self, now: float) -> None:
        rate = self.limit / WINDOW_S
        self.level = min(self.limit, self.level + max(0.0, now - self.updated) * rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` fits (0 if it does now); ``inf`` if it never can."""
        if amount <= self.level:
            return 0.0
        if amount > self.limit:
            return math.inf
        return (amount - self.level) * WINDOW_S / self.limit


class RateLimiter:
    """RPM and TPM buckets per ``Principal.key_id``; keys without limits cost nothing."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    def _bucket(self, key: str, kind: str, limit: int, now: float) -> _Bucket:
        bucket = self._buckets.get((key, kind))
        if bucket is None or bucket.limit != limit:
            # New key, or its limit changed: start full at the new limit.
            bucket = _Bucket(limit=float(limit), level=float(limit), updated=now)
            self._buckets[(key, kind)] = bucket
        else:
            bucket.refill(now)
        return bucket

    def check(self, principal: Principal, tokens: int = 0) -> None:
        """Take one request and ``tokens`` from the key's buckets, or raise :class:`RateLimited`.

        The error carries ``Retry-After`` (whole seconds, at least 1) until both would fit.
        A request larger than a whole minute's token allowance can never fit: it is refused
        without ``Retry-After``.
        """
        now = self._clock()
        needs: list[tuple[_Bucket, float, str]] = []
        if principal.rpm is not None:
            needs.append((self._bucket(principal.key_id, "rpm", principal.rpm, now), 1.0, "requests"))
        if principal.tpm is not None:
            needs.append(
                (self._bucket(principal.key_id, "tpm", principal.tpm, now), float(max(tokens, 0)), "tokens")
            )
        waits = [(bucket.wait_for(amount), bucket, amount, what) for bucket, amount, what in needs]
        worst = max(waits, default=None, key=lambda w: w[0])
        if worst is not None and worst[0] > 0:
            wait, bucket, amount, what = worst
            limit = int(bucket.limit)
            if math.isinf(wait):
                raise RateLimited(
                    f"this request needs about {int(amount)} {what}, more than the key's limit of "
                    f"{limit} {what} per minute"
                )
            retry_after = max(1, math.ceil(wait))
            raise RateLimited(
                f"rate limit of {limit} {what} per minute reached for this key; "
                f"try again in {retry_after}s",
                headers={"retry-after": str(retry_after)},
            )
        for bucket, amount, _ in needs:
            bucket.level -= amount

    def adjust(self, principal: Principal, delta_tokens: int) -> None:
        """Correct the TPM bucket once billed usage is known (positive: used more than estimated).

        The level may go below zero, which delays the key's next requests accordingly.
        """
        if principal.tpm is None:
            return
        bucket = self._bucket(principal.key_id, "tpm", principal.tpm, self._clock())
        bucket.level = min(bucket.limit, bucket.level - delta_tokens)

    def remaining(self, principal: Principal) -> dict[str, int]:
        """What is left now, for ``x-ratelimit-remaining-{requests,tokens}`` headers."""
        now = self._clock()
        out: dict[str, int] = {}
        if principal.rpm is not None:
            out["requests"] = int(self._bucket(principal.key_id, "rpm", principal.rpm, now).level)
        if principal.tpm is not None:
            out["tokens"] = int(self._bucket(principal.key_id, "tpm", principal.tpm, now).level)
        return out
