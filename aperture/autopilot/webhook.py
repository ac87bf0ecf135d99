"""An optional JSON POST on proposal, promotion and rollback.

A receiver that is down or slow never stops the loop: the outcome is logged and recorded,
and the controller moves on. The transport is injectable so tests need no patching.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

log = logging.getLogger("aperture.autopilot")

EVENTS = ("proposal", "promotion", "rollback")


class Webhook:
    def __init__(self, url: str | None, timeout_s: float = 5.0, transport: httpx.BaseTransport | None = None) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.transport = transport

    def post(self, event: str, payload: dict[str, Any]) -> str:
        """Send ``{"event": ..., **payload}``; returns ``"sent"``, ``"off"`` or the failure."""
        if event not in EVENTS:
            raise ValueError(f"unknown webhook event {event!r}")
        if not self.url:
            return "off"
        body = {"event": event, "source": "aperture.autopilot", **payload}
        try:
            with httpx.Client(timeout=self.timeout_s, transport=self.transport, trust_env=False) as client:
                response = client.post(self.url, json=body)
            if response.status_code >= 300:
                log.warning("webhook %s answered %s", event, response.status_code)
                return f"status {response.status_code}"
        except httpx.HTTPError as exc:
            log.warning("webhook %s failed: %s", event, exc)
            return f"failed: {type(exc).__name__}"
        return "sent"
