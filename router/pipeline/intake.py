"""Intake: every image read once (decoded or fetched under the SSRF guard), then the features.

After this stage the body carries ``sha256:<hex>`` in place of each image's URL: the decoded
bytes are kept on the context, and the client's base64 string (1.33× the image) would
otherwise ride along in every later copy of the body. The text-height feature runs in worker
threads (it looks at pixels); the request's features are what the route stage decides on.
"""

from __future__ import annotations

import asyncio

from router.billing import request_text_tokens
from router.images.features import estimate_text_height
from router.images.intake import IntakeImage, intake
from router.pipeline.context import RequestContext
from router.pipeline.services import Services
from router.rules import ImageFeatures, RequestFeatures


async def intake_images(services: Services, ctx: RequestContext) -> None:
    images = await intake(ctx.body, services.fetcher, services.limits)
    messages = ctx.body["messages"]
    for image in images:
        messages[image.message_index]["content"][image.part_index]["image_url"]["url"] = f"sha256:{image.sha256}"
    heights: list[float | None] = [None] * len(images)
    if services.config.images.text_features and images:
        heights = list(await asyncio.gather(*(asyncio.to_thread(estimate_text_height, i.data, i.header) for i in images)))
    ctx.images = images
    ctx.text_heights = heights
    ctx.text_tokens = request_text_tokens(messages)
    ctx.features = request_features(ctx, images, heights)


def request_features(ctx: RequestContext, images: list[IntakeImage], heights: list[float | None]) -> RequestFeatures:
    return RequestFeatures(
        images=tuple(
            ImageFeatures(i.header.width, i.header.height, i.nbytes, i.header.format, h)
            for i, h in zip(images, heights, strict=True)
        ),
        task=ctx.hints.task, team=ctx.need_principal().team, model=ctx.requested_model,
    )
