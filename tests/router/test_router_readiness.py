"""Router health means ready: SERVING only while some tier can take a request."""

from __future__ import annotations

import asyncio
import time

from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.router.routing_helpers import FakeTier, Router, tier_entry

SERVING = health_pb2.HealthCheckResponse.SERVING


async def router_health(router: Router) -> int:
    stub = health_pb2_grpc.HealthStub(router.channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)).status


async def test_router_is_not_serving_while_every_tier_is_down_and_serving_within_a_health_interval_after_one_returns(tmp_path, started):
    """With every tier down the router answers NOT_SERVING to health checks; once a tier is SERVING again the
    router is SERVING within one health interval (it recovers by itself, breaker and all)."""
    interval = 1.0  # the production default
    a = await started(FakeTier("a"))
    b = await started(FakeTier("b"))
    router = await started(Router(tmp_path, [tier_entry(a), tier_entry(b)], {}, health_interval_s=interval))
    await router.wait_for(_is(router, SERVING), what="router SERVING")

    await a.stop()
    await router.wait_for(_is(router, SERVING), what="still SERVING with b up")
    await b.stop()
    down = await router.wait_for(_is_not(router, SERVING), timeout=3 * interval, what="router NOT_SERVING")
    print(f"\nrouter NOT_SERVING {down * 1000:.0f} ms after the last tier stopped")

    await asyncio.sleep(3 * interval)  # long enough for the router's reconnect backoff to grow
    await b.start()  # same port, fresh engine
    back = time.monotonic()
    await router.wait_for(_is(router, SERVING), timeout=3 * interval, what="router SERVING again")
    took = time.monotonic() - back
    print(f"router SERVING {took * 1000:.0f} ms after a tier came back (health interval {interval * 1000:.0f} ms)")
    assert took <= interval * 1.25  # one health interval, plus scheduling slack on a loaded machine
    info = (await router.tiers())["b"]
    assert info.breaker != 2  # not OPEN: the breaker let it probe at once


def _is(router: Router, status: int):
    async def check() -> bool:
        return await router_health(router) == status
    return check


def _is_not(router: Router, status: int):
    async def check() -> bool:
        return await router_health(router) != status
    return check
