"""Failover before the first token, breakers fed by call outcomes and health, and ListTiers' view of them."""

from __future__ import annotations

import asyncio

import pytest

from qarr.v1 import router_service_pb2 as pb
from tests.router.routing_helpers import FakeTier, Router, collect, profile, request, tier_entry

# `a` is the policy's choice (cheaper and more accurate); `b` is the next candidate.
PROFILES = {"a": profile(0.9, cost=0.1), "b": profile(0.5, cost=1.0)}
ANY = {"min_accuracy": 0.0, "latency_budget_ms": 60_000}


async def two_tiers(started, tmp_path, **settings):
    a = await started(FakeTier("a"))
    b = await started(FakeTier("b"))
    router = await started(Router(tmp_path, [tier_entry(a), tier_entry(b)], PROFILES, **settings))
    await router.wait_serving("a", "b")
    return a, b, router


async def test_failure_before_first_token_completes_on_next_tier(started, tmp_path):
    """A tier that fails before its first token is retried on the next candidate; the caller sees no error."""
    a, b, router = await two_tiers(started, tmp_path)
    text, last = await collect(router.stub, request(max_tokens=5, **ANY))
    assert (last.tier, last.attempts, last.routing_reason) == ("a", 1, "best_utility")
    a.engine.fail_next = 1
    text, last = await collect(router.stub, request(max_tokens=5, **ANY))
    assert (last.tier, last.attempts, last.routing_reason) == ("b", 2, "next_best_utility")
    assert text == "alpha bravo charlie delta echo "
    assert last.usage.completion_tokens == 5


async def test_breaker_opens_after_five_failures_then_closes_through_half_open(started, tmp_path):
    """Five failed calls open a's breaker (later calls go straight to b); when a recovers, a probe closes it."""
    a, b, router = await two_tiers(started, tmp_path)
    a.engine.fail_next = 1000
    attempts = []
    for _ in range(10):
        _, last = await collect(router.stub, request(max_tokens=2, **ANY))
        assert last.tier == "b"
        attempts.append(last.attempts)
    assert attempts == [2] * 5 + [1] * 5  # a was tried exactly 5 times
    assert (await router.tiers())["a"].breaker == pb.BREAKER_STATE_OPEN

    a.engine.fail_next = 0  # a recovers
    states = []

    async def closed_again() -> bool:
        info = (await router.tiers())["a"]
        states.append(info.breaker)
        if info.breaker == pb.BREAKER_STATE_HALF_OPEN:
            _, last = await collect(router.stub, request(max_tokens=2, **ANY))
            assert last.tier == "a"  # the probe
        return info.breaker == pb.BREAKER_STATE_CLOSED

    await router.wait_for(closed_again, timeout=3, what="breaker CLOSED")
    assert pb.BREAKER_STATE_HALF_OPEN in states
    _, last = await collect(router.stub, request(max_tokens=2, **ANY))
    assert (last.tier, last.attempts) == ("a", 1)


async def test_client_errors_never_count_against_a_tier(started, tmp_path):
    """Requests the tier rejects as INVALID_ARGUMENT leave its breaker closed however many there are."""
    a, b, router = await two_tiers(started, tmp_path)
    bad = request(max_tokens=5, tier="a")
    bad.sampling.top_p = 7.0  # out of range: the tier answers INVALID_ARGUMENT
    for _ in range(8):
        try:
            await collect(router.stub, bad)
            raise AssertionError("expected INVALID_ARGUMENT")
        except Exception as e:  # grpc.aio.AioRpcError
            assert e.code().name == "INVALID_ARGUMENT"
    assert (await router.tiers())["a"].breaker == pb.BREAKER_STATE_CLOSED


async def test_health_not_serving_opens_breaker_and_diverts(started, tmp_path):
    """A tier whose health turns NOT_SERVING gets its breaker opened and no new traffic."""
    a, b, router = await two_tiers(started, tmp_path)
    await a.server.mesh.set_health(False)
    waited = await router.wait_for(lambda: router.backends["a"].serving is False, what="a NOT_SERVING")
    assert waited < 0.2  # Watch pushes it at once (Check would take up to one interval + its deadline)
    info = (await router.tiers())["a"]
    assert (info.health, info.breaker) == (pb.HEALTH_STATE_NOT_SERVING, pb.BREAKER_STATE_OPEN)
    _, last = await collect(router.stub, request(max_tokens=2, **ANY))
    assert (last.tier, last.attempts) == ("b", 1)


async def test_list_tiers_shows_breaker_health_load_and_profile(started, tmp_path):
    """ListTiers reports each tier's breaker, health, live load, in-flight count and profile."""
    a, b, router = await two_tiers(started, tmp_path)
    a.engine.token_delay_s = 0.05
    call = router.stub.Generate(request(max_tokens=100, **ANY))
    await call.read()
    await router.wait_for(lambda: router.backends["a"].load.running_requests == 1, what="a's load polled")
    info = (await router.tiers())["a"]
    assert info.health == pb.HEALTH_STATE_SERVING and info.breaker == pb.BREAKER_STATE_CLOSED
    assert info.in_flight == 1 and info.load.running_requests == 1
    assert info.profile.accuracy == 0.9 and info.profile.decode_tokens_per_second == 200
    call.cancel()
    await router.wait_for(lambda: router.backends["a"].in_flight == 0, what="a's stream closed")
    await asyncio.sleep(0)


async def test_load_from_last_chunk_and_kv_pressure_divert(started, tmp_path):
    """The load on a stream's last message updates the router without polling; a tier past the KV
    threshold then loses new work to the other tier, with the reason said in the response."""
    a, b, router = await two_tiers(started, tmp_path, load_interval_s=3600)  # no GetLoad in this test
    a.engine.kv_cache_usage = 0.95
    _, last = await collect(router.stub, request(max_tokens=2, **ANY))
    assert last.tier == "a"
    assert router.backends["a"].load.kv_cache_usage == pytest.approx(0.95)  # carried on a's last message
    _, last = await collect(router.stub, request(max_tokens=2, **ANY))
    assert (last.tier, last.routing_reason, last.attempts) == ("b", "kv_pressure_diverted", 1)
