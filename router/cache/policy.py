"""Pure decisions of the response cache: the request header, what may be stored, the entry.

``x-aperture-cache`` (request) says how one request uses the cache, when its team has the
cache enabled (``cache.enabled`` and ``cache.teams``):

* ``use`` (the default): answer from the cache on a hit; store the answer on a miss;
* ``bypass``: neither read nor write (a one-off, or content not to keep);
* ``refresh``: do not read, but store the fresh answer (replaces a stale entry).

For a team without the cache nothing is read or stored, whatever the header. The response
carries ``x-aperture-cache: hit|miss`` when the cache was consulted. Only complete answers
are stored: an error, an empty answer, or a choice without a finish reason never is.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

from collector.semconv import APERTURE_CACHE_HIT, APERTURE_CACHE_SAVED_USD, APERTURE_COST_BILLED_USD
from router.errors import InvalidRequest

CACHE_HEADER = "x-aperture-cache"
CacheMode = Literal["use", "bypass", "refresh"]
MODES: tuple[CacheMode, ...] = ("use", "bypass", "refresh")


@dataclass(frozen=True)
class CacheDecision:
    lookup: bool
    store: bool


def parse_cache_mode(value: str | None) -> CacheMode:
    """The header's mode (absent: ``use``); anything else is refused as ``invalid_header``."""
    if value is None or not value.strip():
        return "use"
    mode = value.strip().lower()
    if mode not in MODES:
        raise InvalidRequest(
            f"{CACHE_HEADER} must be one of use, bypass, refresh; got {value[:40]!r}",
            code="invalid_header", param=CACHE_HEADER,
        )
    return cast(CacheMode, mode)


def decide_cache(mode: CacheMode, enabled_for_team: bool) -> CacheDecision:
    if not enabled_for_team or mode == "bypass":
        return CacheDecision(lookup=False, store=False)
    return CacheDecision(lookup=mode == "use", store=True)


def cache_response_header(hit: bool) -> dict[str, str]:
    return {CACHE_HEADER: "hit" if hit else "miss"}


def cache_span_attributes(decision: CacheDecision, hit: CachedResponse | None) -> dict[str, Any]:
    """What the request span records: nothing when the cache was not consulted; on a hit, the
    cost saved (what the answer cost when it was paid) and a billed cost of 0."""
    if not decision.lookup:
        return {}
    if hit is None:
        return {APERTURE_CACHE_HIT: False}
    return {APERTURE_CACHE_HIT: True, APERTURE_CACHE_SAVED_USD: hit.cost_usd, APERTURE_COST_BILLED_USD: 0.0}


def is_cacheable(completion: Mapping[str, Any]) -> bool:
    """A complete, successful chat completion: choices, each with a message and a finish reason."""
    if "error" in completion or completion.get("object", "chat.completion") != "chat.completion":
        return False
    choices = completion.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    return all(
        isinstance(c, Mapping) and isinstance(c.get("message"), Mapping)
        and c.get("finish_reason") not in (None, "error")
        for c in choices
    )


@dataclass(frozen=True)
class CachedResponse:
    """One stored answer: the completion as the client got it, and what it cost when it was paid."""

    completion: dict[str, Any]
    cost_usd: float
    route: str
    stored_at: float

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes | str) -> CachedResponse:
        raw = json.loads(data)
        return cls(dict(raw["completion"]), float(raw["cost_usd"]), str(raw["route"]), float(raw["stored_at"]))
