"""The upstream client's small keep-alive pools (httpcore engine): how connections are split, and that requests
spread over the pools and always give their slot back (send, stream, failure)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.providers.base import UpstreamRequest
from router.upstream import UpstreamClient, UpstreamTransportError, pool_sizes


@given(st.integers(1, 5000), st.integers(1, 300))
def test_workers_pool_sizes_split_every_connection(total: int, size: int) -> None:
    sizes = pool_sizes(total, size)
    assert sum(sizes) == total
    assert all(1 <= s <= size for s in sizes)
    assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("total,size", [(0, 16), (16, 0), (-1, 4)])
def test_workers_pool_sizes_refuse_empty_pools(total: int, size: int) -> None:
    with pytest.raises(ValueError):
        pool_sizes(total, size)


async def test_workers_injected_transport_is_one_pool() -> None:
    async with UpstreamClient(httpx.MockTransport(lambda r: httpx.Response(200)), max_connections=64, pool_size=4) as c:
        assert c.pools == 1
    async with UpstreamClient(max_connections=40, pool_size=16, engine="httpcore") as c:
        assert c.pools == 3
    async with UpstreamClient(max_connections=40, pool_size=16) as c:  # aiohttp's pool has no O(n²) scan
        assert c.pools == 1


def _req(port: int) -> UpstreamRequest:
    return UpstreamRequest(method="POST", url=f"http://127.0.0.1:{port}/v1/x", headers={}, json={"n": 1})


async def test_workers_requests_spread_over_pools_and_release() -> None:
    peers: set[int] = set()
    gate = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.add(writer.get_extra_info("peername")[1])
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                await gate.wait()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, UpstreamClient(max_connections=6, pool_size=2, engine="httpcore") as client:
        sends = [asyncio.create_task(client.send(_req(port), connect_timeout_s=5, timeout_s=10)) for _ in range(5)]
        while sum(client.in_flight) < 5:
            await asyncio.sleep(0.01)
        assert sorted(client.in_flight) == [1, 2, 2]  # fewest in flight first: 1, 1, 1, then 2, 2
        gate.set()
        assert all(r.status_code == 200 for r in await asyncio.gather(*sends))
        assert client.in_flight == (0, 0, 0)
        assert len(peers) == 5

        async with client.stream(_req(port), connect_timeout_s=5, timeout_s=10) as resp:
            assert client.in_flight == (1, 0, 0)
            await resp.aread()
        assert client.in_flight == (0, 0, 0)

    with pytest.raises(UpstreamTransportError):
        async with UpstreamClient() as client:
            try:
                await client.send(_req(port), connect_timeout_s=1, timeout_s=1)  # the server is gone
            finally:
                assert client.in_flight == (0,) * client.pools
