"""The request pipeline: small stages over one :class:`RequestContext`.

A stage is ``async def stage(services, ctx) -> None``: it reads what earlier stages put on
the context, adds its own part, and answers early by raising a :class:`GatewayError`.
:class:`router.gateway.Gateway` runs :data:`ADMISSION` in order, then sends and bills; see
docs/architecture.md ("Request pipeline") for the sequence and where new stages go.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from router.pipeline.admit import admit
from router.pipeline.cache import lookup_cache
from router.pipeline.context import GatewayResponse, RequestContext
from router.pipeline.guard import guard_images
from router.pipeline.intake import intake_images
from router.pipeline.keep import keep_images
from router.pipeline.price import price
from router.pipeline.route import route
from router.pipeline.services import Services

Stage = Callable[[Services, RequestContext], Awaitable[None]]

#: Everything before the first byte goes upstream. The guardrails run after ``route`` (their
#: settings may depend on the rule id) and before ``price`` (which prepares the images they may
#: redact); the response cache goes last (on a hit it sets ``ctx.cache_hit``, ``ctx.result``
#: and ``ctx.target``, and the gateway answers without sending).
ADMISSION: tuple[Stage, ...] = (admit, intake_images, route, guard_images, price, keep_images, lookup_cache)

__all__ = ["ADMISSION", "GatewayResponse", "RequestContext", "Services", "Stage"]
