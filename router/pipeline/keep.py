"""Keep: the request's images in the content-addressed blob store, for replay and evaluation.

Runs once the request is admitted (priced and reserved), so a refused request leaves nothing
on disk; the write is off the event loop.
"""

from __future__ import annotations

import asyncio

from router.pipeline.context import RequestContext
from router.pipeline.services import Services


async def keep_images(services: Services, ctx: RequestContext) -> None:
    if services.blobs is None:
        return
    for image in ctx.images:
        await asyncio.to_thread(services.blobs.put, image.data, image.sha256)
