"""Server lifecycle shared by router and tiers (mesh/server.py): a drain ends as soon as the work does."""

from __future__ import annotations

import asyncio
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mesh.server import MeshServer

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


async def test_a_drained_server_stops_at_once_though_routers_watch_its_health():
    """Open health Watch calls (every router keeps one per tier) see NOT_SERVING during the notice, then end
    cleanly, so stop() returns when the in-flight calls are done instead of waiting out the whole grace."""
    server = MeshServer(["qarr.v1.TierService"])
    port = await server.start("127.0.0.1:0")
    await server.set_health(True)
    seen: list = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)

        async def watch() -> None:
            async for update in stub.Watch(health_pb2.HealthCheckRequest(service="qarr.v1.TierService")):
                seen.append(update.status)
            seen.append("ended")

        watchers = [asyncio.create_task(watch()) for _ in range(3)]
        while len(seen) < 3:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await server.stop(grace=30, notice=0.2)
        took = time.monotonic() - started
        await asyncio.gather(*watchers)
    print(f"\nstop with 3 open Watch calls and grace 30 s took {took:.2f} s")
    assert took < 5
    assert seen.count(SERVING) == 3 and seen.count(NOT_SERVING) == 3 and seen.count("ended") == 3
