"""Issue 14, 3.1: hostile requests and random bytes at the router and at a tier, both real processes."""

from __future__ import annotations

import asyncio
import collections
import time

import grpc
from hypothesis import HealthCheck, Phase, given, settings

from qarr.v1 import tier_service_pb2
from tests.fuzz import ALLOWED, generate_requests, outcome_async, random_bodies, router_requests
from tests.reliability.procmesh import ProcMesh, fake_tier, generate, record, request, tier_health

# 10,000 hypothesis requests and 2,000 random byte strings in all, half at the router and half at a tier.
# Generating them is the cost (hypothesis: 2-5 ms a request on a quiet core); the servers keep up.
REQUESTS = 5_000  # at each of the two
BODIES = 1_000  # at each
CONCURRENCY = 32
TIMEOUT_S = 10.0  # a call still open after this is a hang
ALLOWED_AT_ROUTER = ALLOWED | {grpc.StatusCode.NOT_FOUND}


async def fuzz(address: str, method: str, strategy, allowed: frozenset, seed: int) -> tuple[collections.Counter, list]:
    """Send REQUESTS examples of `strategy` (generated in a thread, derandomized) and BODIES random byte strings
    to `method`, CONCURRENCY at a time; the count of each status and the answers that broke a rule."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=4 * CONCURRENCY)

    def put(body: bytes | None) -> None:
        asyncio.run_coroutine_threadsafe(queue.put(body), loop).result()

    def produce() -> None:
        @settings(max_examples=REQUESTS, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(req=strategy)
        def one(req) -> None:
            put(req.SerializeToString())

        try:
            one()
            for body in random_bodies(BODIES, seed=seed):
                put(body)
        finally:
            for _ in range(CONCURRENCY):
                put(None)

    seen: collections.Counter = collections.Counter()
    bad: list = []

    async def send(channel) -> None:
        while (body := await queue.get()) is not None:
            code, details, reason = await outcome_async(channel, method, body, timeout=TIMEOUT_S)
            seen[code.name] += 1
            if code not in allowed or (code is not grpc.StatusCode.OK and not _clean(details, reason)):
                bad.append((code.name, reason, details[:200], body[:80]))

    async with grpc.aio.insecure_channel(address, options=(("grpc.enable_retries", 0),)) as channel:
        await asyncio.gather(loop.run_in_executor(None, produce), *(send(channel) for _ in range(CONCURRENCY)))
    return seen, bad


def _clean(details: str, reason: str) -> bool:
    """An error answer has a reason and a bounded message with no traceback or path."""
    return bool(reason) and len(details) <= 600 and "Traceback" not in details and ".py" not in details


async def test_hostile_requests_and_random_bytes_at_the_router_and_a_tier(tmp_path):
    """10,000 hypothesis requests over every field (huge, empty, malformed, unicode, NUL, NaN...) and 2,000
    random byte strings, half at the router and half at a tier directly: only OK, INVALID_ARGUMENT,
    RESOURCE_EXHAUSTED (NOT_FOUND for unknown tiers), each error with a reason and no internals, never
    UNKNOWN, INTERNAL or a hang; afterwards every server is SERVING and serves a normal request."""
    # Production health timing (1 s checks, 2 s deadline): the fast test settings let a tier starved of CPU by the
    # fuzzing on a shared machine miss a deadline, which opens its breaker, a verdict on the machine, not the input.
    mesh = await ProcMesh(tmp_path, [fake_tier("a"), fake_tier("b")], health_interval_s=1.0, health_timeout_s=2.0).start()
    try:
        t0 = time.monotonic()
        at_router, bad_router = await fuzz(mesh.address, "/qarr.v1.RouterService/Generate", router_requests(("a", "b")),
                                           ALLOWED_AT_ROUTER, seed=14)
        router_s = time.monotonic() - t0
        t0 = time.monotonic()
        at_tier, bad_tier = await fuzz(mesh.tier_address("a"), "/qarr.v1.TierService/Generate",
                                       generate_requests(tier_service_pb2.TierServiceGenerateRequest), ALLOWED, seed=15)
        tier_s = time.monotonic() - t0
        health = [await tier_health(a) for a in (mesh.address, mesh.tier_address("a"), mesh.tier_address("b"))]
        normal = await generate(mesh.stub, request(max_tokens=4))
        alive = [s.exit_code() is None for s in (mesh.router, *mesh.tiers.values())]
    finally:
        await mesh.stop()

    assert not bad_router, bad_router[:5]
    assert not bad_tier, bad_tier[:5]
    assert sum(at_router.values()) == sum(at_tier.values()) == REQUESTS + BODIES
    assert at_router["OK"] and at_router["INVALID_ARGUMENT"] and at_tier["OK"] and at_tier["INVALID_ARGUMENT"]
    assert health == ["SERVING"] * 3 and all(alive)
    assert normal.code == "OK" and normal.delivered == 4
    record("fuzz", f"{REQUESTS} hypothesis requests + {BODIES} random byte strings at the router in {router_s:.0f} s: "
                   f"{dict(at_router)}; as many at a tier in {tier_s:.0f} s: {dict(at_tier)}; 0 UNKNOWN, 0 INTERNAL, "
                   f"0 hangs, every error with a reason; all servers SERVING and serving afterwards",
           router=dict(at_router), tier=dict(at_tier), router_s=router_s, tier_s=tier_s)
