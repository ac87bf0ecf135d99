"""A streaming client that hangs up as soon as it has read ``[DONE]``, as the openai SDK does.

The gateway bills, caches and traces a stream after its last chunk, in the generator's
``finally``. Under uvicorn's ASGI 2.3 scope Starlette cancels the response task when the client
disconnects, so that tail must not be cancellable: a settle that awaits (a Redis round trip,
here a slow one) would otherwise be cut, leaving the reservation held and no span at all.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from tests.integration.gateway_harness import data_url, image_message, page_png, running_stack

pytestmark = pytest.mark.slow


def _spans(db: Path, reference_id: str) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute("SELECT status, billed_cost_usd FROM request_spans WHERE reference_id = ?",
                            [reference_id]).fetchall()


def test_a_client_that_hangs_up_after_done_is_still_billed_and_traced(tmp_path: Path) -> None:
    with running_stack(tmp_path) as stack:
        gateway = stack.app.state.gateway
        budgets = gateway.state.budgets
        settle = budgets.settle
        settled: list[float] = []

        async def slow_settle(reservation: Any, billed_usd: float) -> None:
            await asyncio.sleep(0.5)  # a slow shared store: the client is long gone by now
            await settle(reservation, billed_usd)
            settled.append(billed_usd)

        budgets.settle = slow_settle
        body = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
                "messages": image_message(data_url(page_png(96, 48, "HANG UP")))}
        headers = {"authorization": "Bearer sk-test", "x-aperture-reference-id": "hang-up"}
        with httpx.Client(timeout=30) as client, \
                client.stream("POST", f"{stack.gateway}/v1/chat/completions", json=body, headers=headers) as resp:
            assert resp.status_code == 200
            lines = []
            for line in resp.iter_lines():
                lines.append(line)
                if line == "data: [DONE]":
                    break  # and close the connection at once, before the gateway's tail has run
        assert any('"usage"' in line for line in lines)
        deadline = time.monotonic() + 10
        rows: list[tuple[Any, ...]] = []
        while not rows and time.monotonic() < deadline:  # the span is the tail's last act
            time.sleep(0.1)
            stack.flush()
            rows = _spans(stack.db, "hang-up")
        assert settled and settled[0] > 0  # the bill, not the estimate: the usage was read
        assert len(rows) == 1 and rows[0][0] == "ok" and rows[0][1] == pytest.approx(settled[0])
        assert asyncio.run(budgets.reserved("default")) == 0.0
