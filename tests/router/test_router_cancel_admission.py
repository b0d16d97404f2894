"""Cancellation and deadlines reach the tier's engine; admission limits answer at once."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from tests.router.routing_helpers import FakeTier, Router, profile, request, tier_entry

PROFILES = {"a": profile(0.9, cost=0.1), "b": profile(0.5, cost=1.0)}
ANY = {"min_accuracy": 0.0, "latency_budget_ms": 60_000}


async def one_tier(started, tmp_path, token_delay_s=0.01, tier_extra=None, **settings):
    a = await started(FakeTier("a", token_delay_s=token_delay_s))
    router = await started(Router(tmp_path, [tier_entry(a, **(tier_extra or {}))], PROFILES, **settings))
    await router.wait_serving("a")
    return a, router


async def aborted_within(engine, request_id: str, since: float, timeout: float = 2.0) -> float:
    while request_id not in engine.aborted:
        if time.monotonic() - since > timeout:
            raise AssertionError(f"engine request {request_id} not aborted after {timeout} s")
        await asyncio.sleep(0.001)
    return time.monotonic() - since


async def test_client_cancel_aborts_engine_request(started, tmp_path):
    """Cancelling the call at the router aborts the request in the tier's engine within 100 ms."""
    a, router = await one_tier(started, tmp_path)
    req = request(max_tokens=1000, **ANY)
    req.request_id = "cancel-me"
    call = router.stub.Generate(req, timeout=30)
    await call.read()
    cancelled_at = time.monotonic()
    call.cancel()
    took = await aborted_within(a.engine, "cancel-me", cancelled_at)
    assert took < 0.1, took
    print(f"\ncancel -> engine abort: {took * 1000:.1f} ms")


async def test_deadline_aborts_engine_request(started, tmp_path):
    """The caller's deadline travels to the tier: its engine request is aborted within 100 ms of it."""
    a, router = await one_tier(started, tmp_path)
    req = request(max_tokens=1000, **ANY)
    req.request_id = "deadline"
    deadline = time.monotonic() + 0.5
    with pytest.raises(grpc.aio.AioRpcError) as e:
        async for _ in router.stub.Generate(req, timeout=0.5):
            pass
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    took = await aborted_within(a.engine, "deadline", deadline)
    assert took < 0.1, took
    assert (await router.tiers())["a"].breaker == 1  # CLOSED: the caller's deadline is not the tier's fault
    print(f"\ndeadline -> engine abort: {took * 1000:.1f} ms after the deadline")


async def _attempt(stub, max_tokens: int):
    """(status code name, seconds to the end or to the error)."""
    started = time.monotonic()
    try:
        async for _ in stub.Generate(request(max_tokens=max_tokens, **ANY), timeout=30):
            pass
        return "OK", time.monotonic() - started
    except grpc.aio.AioRpcError as e:
        return e.code().name, time.monotonic() - started, e.details()


async def test_router_admission_limit_rejects_excess_at_once(started, tmp_path):
    """2x the router's in-flight limit: the excess gets RESOURCE_EXHAUSTED within 50 ms, the rest complete."""
    a, router = await one_tier(started, tmp_path, token_delay_s=0.02, max_in_flight=10)
    admitted = [asyncio.create_task(_attempt(router.stub, 20)) for _ in range(10)]
    await router.wait_for(lambda: router.server.router.in_flight == 10, what="10 streams admitted")
    excess = await asyncio.gather(*(_attempt(router.stub, 20) for _ in range(10)))
    done = await asyncio.gather(*admitted)
    assert [r[0] for r in done] == ["OK"] * 10
    assert [r[0] for r in excess] == ["RESOURCE_EXHAUSTED"] * 10
    assert "limit of 10" in excess[0][2]
    slowest = max(r[1] for r in excess)
    assert slowest < 0.05, slowest
    print(f"\nrouter limit: excess rejected in at most {slowest * 1000:.1f} ms")


async def test_tier_admission_limit_rejects_excess_at_once(started, tmp_path):
    """2x a tier's in-flight limit (its only tier): the excess gets RESOURCE_EXHAUSTED within 50 ms."""
    a, router = await one_tier(started, tmp_path, token_delay_s=0.02, tier_extra={"max_in_flight": 5})
    admitted = [asyncio.create_task(_attempt(router.stub, 20)) for _ in range(5)]
    await router.wait_for(lambda: router.backends["a"].in_flight == 5, what="5 streams on a")
    excess = await asyncio.gather(*(_attempt(router.stub, 20) for _ in range(5)))
    done = await asyncio.gather(*admitted)
    assert [r[0] for r in done] == ["OK"] * 5
    assert [r[0] for r in excess] == ["RESOURCE_EXHAUSTED"] * 5
    assert "limit of 5 streams" in excess[0][2]
    assert max(r[1] for r in excess) < 0.05


async def test_retry_budget_bounds_attempts_when_every_tier_fails(started, tmp_path):
    """With every tier failing before its first token, attempts stay within 1.1 x requests + burst."""
    a = await started(FakeTier("a"))
    b = await started(FakeTier("b"))
    settings = {"retry": {"budget_ratio": 0.1, "budget_burst": 2, "backoff_initial_s": 0.0, "backoff_max_s": 0.0},
                "breaker": {"failure_threshold": 10_000}}
    router = await started(Router(tmp_path, [tier_entry(a), tier_entry(b)], PROFILES, **settings))
    await router.wait_serving("a", "b")
    a.engine.fail_next = b.engine.fail_next = 10_000
    calls_before = a.engine.calls + b.engine.calls
    n = 100
    results = [await _attempt(router.stub, 2) for _ in range(n)]
    assert {r[0] for r in results} == {"UNAVAILABLE"}
    attempts = a.engine.calls + b.engine.calls - calls_before
    assert n < attempts <= 1.1 * n + 2, attempts
    print(f"\nretry budget: {attempts} attempts for {n} requests with every tier failing")
