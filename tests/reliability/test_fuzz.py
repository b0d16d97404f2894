"""Issue 14, 3.1: hostile requests and random bytes at the router and at a tier, both real processes."""

from __future__ import annotations

import asyncio
import collections
import time

import grpc
from hypothesis import HealthCheck, Phase, given, settings

from qarr.v1 import router_service_pb2 as pb, tier_service_pb2
from tests.fuzz import ALLOWED, outcome_async, random_bodies, router_requests
from tests.reliability.procmesh import ProcMesh, fake_tier, generate, record, request, tier_health

# Each hypothesis request goes to the router and, without its routing hints, to a tier: generating them is
# the cost (2-5 ms each on a quiet core with hypothesis), sending them is cheap.
REQUESTS = 10_000
BODIES = 2_000  # random byte strings, at each
CONCURRENCY = 32  # calls in flight at each target
TIMEOUT_S = 10.0  # a call still open after this is a hang
ROUTER, TIER = "/qarr.v1.RouterService/Generate", "/qarr.v1.TierService/Generate"
ALLOWED_AT = {ROUTER: ALLOWED | {grpc.StatusCode.NOT_FOUND}, TIER: ALLOWED}


def as_tier_request(req: pb.GenerateRequest) -> bytes:
    """The same request as a TierServiceGenerateRequest (field numbers 1-3 and 5 are shared; 4 is routing)."""
    tier = pb.GenerateRequest()
    tier.CopyFrom(req)
    tier.ClearField("routing")
    return tier_service_pb2.TierServiceGenerateRequest.FromString(tier.SerializeToString()).SerializeToString()


async def fuzz(targets: dict[str, str]) -> tuple[dict[str, collections.Counter], list]:
    """REQUESTS hypothesis requests (generated in a thread, derandomized) and BODIES random byte strings to each
    target (method -> address), CONCURRENCY at a time each; the count of each status per target, and the
    answers that broke a rule."""
    loop = asyncio.get_running_loop()
    queues = {m: asyncio.Queue(maxsize=4 * CONCURRENCY) for m in targets}

    def put(method: str, body: bytes | None) -> None:
        asyncio.run_coroutine_threadsafe(queues[method].put(body), loop).result()

    def produce() -> None:
        @settings(max_examples=REQUESTS, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(req=router_requests(("a", "b")))
        def one(req) -> None:
            put(ROUTER, req.SerializeToString())
            put(TIER, as_tier_request(req))

        try:
            one()
            for router_body, tier_body in zip(random_bodies(BODIES, seed=14), random_bodies(BODIES, seed=15)):
                put(ROUTER, router_body)
                put(TIER, tier_body)
        finally:
            for method in targets:
                for _ in range(CONCURRENCY):
                    put(method, None)

    seen = {m: collections.Counter() for m in targets}
    bad: list = []

    async def send(method: str, channel) -> None:
        while (body := await queues[method].get()) is not None:
            code, details, reason = await outcome_async(channel, method, body, timeout=TIMEOUT_S)
            seen[method][code.name] += 1
            if code not in ALLOWED_AT[method] or (code is not grpc.StatusCode.OK and not _clean(details, reason)):
                bad.append((method, code.name, reason, details[:200], body[:80]))

    channels = {m: grpc.aio.insecure_channel(a, options=(("grpc.enable_retries", 0),)) for m, a in targets.items()}
    try:
        await asyncio.gather(loop.run_in_executor(None, produce),
                             *(send(m, channels[m]) for m in targets for _ in range(CONCURRENCY)))
    finally:
        for channel in channels.values():
            await channel.close()
    return seen, bad


INTERNALS = ("Traceback", 'File "', "site-packages", "Exception", "Error parsing")


def _clean(details: str, reason: str) -> bool:
    """An error answer has a reason and a bounded message with no traceback, source path or exception text.
    (Caller text is quoted back clipped, so a bare ".py" may be the caller's own.) A message over gRPC's receive
    limit is refused by gRPC itself before any handler runs: RESOURCE_EXHAUSTED naming both sizes, no reason."""
    if "Received message larger than max" in details:
        return True  # gRPC's own refusal of a message over the server's receive limit (RESOURCE_EXHAUSTED, both sizes)
    return bool(reason) and len(details) <= 600 and not any(marker in details for marker in INTERNALS)


async def test_hostile_requests_and_random_bytes_at_the_router_and_a_tier(tmp_path):
    """10,000 hypothesis requests over every field (huge, empty, malformed, unicode, NUL, NaN, unknown tiers...)
    and 2,000 random byte strings at the router, and the same at a tier directly: only OK, INVALID_ARGUMENT,
    RESOURCE_EXHAUSTED (NOT_FOUND for unknown tiers), each error with a reason and no internals, never UNKNOWN,
    INTERNAL or a hang; afterwards every server is SERVING and serves a normal request."""
    # Production health timing (1 s checks, 2 s deadline): the fast test settings let a tier starved of CPU by the
    # fuzzing on a shared machine miss a deadline, which opens its breaker, a verdict on the machine, not the input.
    mesh = await ProcMesh(tmp_path, [fake_tier("a"), fake_tier("b")], health_interval_s=1.0, health_timeout_s=2.0).start()
    try:
        t0 = time.monotonic()
        seen, bad = await fuzz({ROUTER: mesh.address, TIER: mesh.tier_address("a")})
        fuzz_s = time.monotonic() - t0
        health = [await tier_health(a) for a in (mesh.address, mesh.tier_address("a"), mesh.tier_address("b"))]
        normal = await generate(mesh.stub, request(max_tokens=4))
        alive = [s.exit_code() is None for s in (mesh.router, *mesh.tiers.values())]
    finally:
        await mesh.stop()

    assert not bad, bad[:5]
    at_router, at_tier = seen[ROUTER], seen[TIER]
    assert sum(at_router.values()) == sum(at_tier.values()) == REQUESTS + BODIES
    assert at_router["OK"] and at_router["INVALID_ARGUMENT"] and at_tier["OK"] and at_tier["INVALID_ARGUMENT"]
    assert health == ["SERVING"] * 3 and all(alive)
    assert normal.code == "OK" and normal.delivered == 4
    record("fuzz", f"{REQUESTS} hypothesis requests + {BODIES} random byte strings at the router: {dict(at_router)}; "
                   f"the same at a tier: {dict(at_tier)}; {fuzz_s:.0f} s for both; 0 UNKNOWN, 0 INTERNAL, 0 hangs, "
                   f"every error with a reason and no internals; all servers SERVING and serving afterwards",
           router=dict(at_router), tier=dict(at_tier), seconds=fuzz_s)
