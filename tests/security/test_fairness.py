"""Fairness between callers (issue 14, item 3.8b): with tokens on, one caller holding 512 streams cannot
starve another, because each caller may hold at most max_in_flight_per_caller streams (CALLER_FULL beyond)."""

from __future__ import annotations

import asyncio
import time

import grpc

from mesh.status import reason_of
from qarr.v1 import router_service_pb2_grpc
from tests.router.routing_helpers import FakeTier, Router, request, tier_entry
from tests.security.conftest import PROFILES

HOG_STREAMS = 512
OTHER_REQUESTS = 20
TIER_SLOTS = 256  # each of the two tiers takes this many streams from the router (TierSpec.max_in_flight)


async def hog_and_other(pki, started, tmp_path, per_caller: int | None) -> dict:
    """alice opens 512 long streams and holds them; then bob sends 20 short requests. Returns the counts."""
    tiers = [await started(FakeTier(name, token_delay_s=1.0)) for name in "ab"]
    for t in tiers:
        t.engine.kv_cache_usage = 0.1  # the fake's load figure would otherwise steer by KV pressure
    router = await started(Router(
        tmp_path, [tier_entry(t, max_in_flight=TIER_SLOTS) for t in tiers], PROFILES, max_in_flight=1024,
        auth={"tokens_file": pki.path("tokens"), "allow_plaintext_tiers": True}, max_in_flight_per_caller=per_caller,
    ))
    await router.wait_serving("a", "b")
    core = router.server.router
    stub = router_service_pb2_grpc.RouterServiceStub(router.channel)
    hog_refusals: list[str] = []

    async def hold(i: int) -> None:
        try:
            async for _ in stub.Generate(request(max_tokens=1000, min_accuracy=0.0, latency_budget_ms=600_000), timeout=120,
                                         metadata=pki.bearer("alice")):
                pass
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                hog_refusals.append(f"{e.code().name}/{reason_of(e.trailing_metadata())}")

    hog = [asyncio.create_task(hold(i)) for i in range(HOG_STREAMS)]
    try:
        held = min(HOG_STREAMS, per_caller or HOG_STREAMS, 2 * TIER_SLOTS)
        try:
            await router.wait_for(lambda: core.in_flight == held and len(hog_refusals) == HOG_STREAMS - held, timeout=120,
                                  what=f"alice holding {held} streams")
        except AssertionError as e:
            raise AssertionError(f"{e}: {core.in_flight} held, refusals {sorted(set(hog_refusals))[:5]} x{len(hog_refusals)}") from None

        async def other() -> tuple[str, float]:
            t0 = time.perf_counter()
            try:
                msgs = [m async for m in stub.Generate(request(max_tokens=1, min_accuracy=0.0, latency_budget_ms=600_000),
                                                       timeout=30, metadata=pki.bearer("bob"))]
                return ("OK" if msgs[-1].finish_reason else "NO_END"), time.perf_counter() - t0
            except grpc.aio.AioRpcError as e:
                return f"{e.code().name}/{reason_of(e.trailing_metadata())}", time.perf_counter() - t0

        results = await asyncio.gather(*(other() for _ in range(OTHER_REQUESTS)))
    finally:
        for task in hog:
            task.cancel()
        await asyncio.gather(*hog, return_exceptions=True)
    outcomes: dict[str, int] = {}
    for outcome, _ in results:
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    refusals: dict[str, int] = {}
    for r in hog_refusals:
        refusals[r] = refusals.get(r, 0) + 1
    return {"alice_held": held, "alice_refused": refusals, "bob": outcomes,
            "bob_max_s": max(s for _, s in results)}


async def test_one_caller_holding_512_streams_does_not_starve_another(pki, started, tmp_path):
    """With max_in_flight_per_caller 256, alice's 512 streams get 256 (the rest CALLER_FULL at once) and every one of
    bob's 20 requests is served; without the limit alice fills both tiers and bob gets RESOURCE_EXHAUSTED."""
    limited = await hog_and_other(pki, started, tmp_path, per_caller=256)
    print(f"\nper-caller limit 256: alice holds {limited['alice_held']} streams, refused {limited['alice_refused']}; "
          f"bob {limited['bob']} of {OTHER_REQUESTS}, slowest {limited['bob_max_s']:.2f} s")
    assert limited["alice_held"] == 256 and limited["alice_refused"] == {"RESOURCE_EXHAUSTED/CALLER_FULL": 256}
    assert limited["bob"] == {"OK": OTHER_REQUESTS}


async def test_without_a_per_caller_limit_one_caller_does_starve_another(pki, started, tmp_path):
    """The control: with no per-caller limit alice's 512 streams take all 512 tier slots and bob's requests are refused
    (what issue 14 measured: 12 of 12 RESOURCE_EXHAUSTED), so the limit above is what serves bob."""
    unlimited = await hog_and_other(pki, started, tmp_path, per_caller=None)
    print(f"\nno per-caller limit: alice holds {unlimited['alice_held']} streams; bob {unlimited['bob']} of {OTHER_REQUESTS}")
    assert unlimited["alice_held"] == 2 * TIER_SLOTS and not unlimited["alice_refused"]
    assert unlimited["bob"].get("OK", 0) == 0
