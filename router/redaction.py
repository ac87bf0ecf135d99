"""Keeping upstream credentials out of every message the gateway produces.

Upstream keys travel in request headers (or, for some APIs, the query string); an upstream may
echo them in an error body, and an ``httpx`` exception may carry the URL. Everything the
upstream client raises passes through here first, so nothing above it can log a key.

Example::

    secrets = secrets_of(req)            # header values and key-like query params
    redact("bad key sk-123456", secrets)  # "bad key [redacted]"
"""

from __future__ import annotations

from collections.abc import Iterable

import httpx

from router.providers.base import UpstreamError, UpstreamRequest

_SECRET_HEADERS = ("authorization", "x-api-key", "x-goog-api-key", "api-key", "proxy-authorization")
_SECRET_PARAMS = ("key", "api_key", "apikey", "access_token")


def secrets_of(req: UpstreamRequest) -> list[str]:
    """The credential strings a request carries (header values and key-like query params)."""
    found: list[str] = []
    for name, value in req.headers.items():
        if name.lower() in _SECRET_HEADERS and value:
            found.append(value)
            # "Bearer sk-..." — also scrub the bare key, which is what upstreams echo.
            _, _, bare = value.partition(" ")
            if bare:
                found.append(bare)
    try:
        params = httpx.URL(req.url).params
    except (httpx.InvalidURL, TypeError, ValueError):
        params = httpx.QueryParams()
    for name in _SECRET_PARAMS:
        found.extend(v for v in params.get_list(name) if v)
    return sorted(set(found), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``[redacted]``."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return text


def scrubbed(err: UpstreamError, req: UpstreamRequest) -> UpstreamError:
    """The adapter's verdict with any credential the upstream echoed removed from its text."""
    clean = redact(err.message, secrets_of(req))
    if clean != err.message:
        err.message = clean
        err.args = (clean,)
    return err
