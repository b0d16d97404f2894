"""/metrics on a running router and tiers, scraped over HTTP after real requests."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.telemetry import RouterTelemetry
from tests.observability.conftest import PRICES, scrape, start_mesh, stop_mesh, value

PROMPT = "tell me a story"  # the fake engine counts 4 prompt tokens
PROMPT_TOKENS = 4


async def test_router_metrics_count_the_requests_sent(mesh):
    """Requests, routing decisions, histogram counts, tokens and cost on the router equal what was sent."""
    for _ in range(3):
        await mesh.generate(PROMPT, tier="a", max_tokens=4)
    for _ in range(2):
        await mesh.generate(PROMPT, tier="b", max_tokens=5)
    await mesh.generate(PROMPT, max_tokens=2)  # unpinned, no profiles: the policy falls back to the first tier, a
    m = await mesh.scrape_router()

    assert value(m, "qarr_router_requests_total", tier="a", code="OK", finish_reason="length") == 4
    assert value(m, "qarr_router_requests_total", tier="b", code="OK", finish_reason="length") == 2
    assert value(m, "qarr_router_routing_decisions_total", tier="a", reason="pinned") == 3
    assert value(m, "qarr_router_routing_decisions_total", tier="a", reason="fallback_most_accurate") == 1
    assert value(m, "qarr_router_routing_decisions_total", tier="b", reason="pinned") == 2
    for name in ("qarr_router_time_to_first_token_seconds", "qarr_router_request_duration_seconds"):
        assert value(m, f"{name}_count", tier="a") == 4
        assert value(m, f"{name}_count", tier="b") == 2
        assert value(m, f"{name}_bucket", tier="a", le="+Inf") == 4
        assert value(m, f"{name}_bucket", tier="a", le="60.0") == 4
        assert value(m, f"{name}_sum", tier="a") > 0
    assert value(m, "qarr_router_prompt_tokens_total", tier="a") == 4 * PROMPT_TOKENS
    assert value(m, "qarr_router_completion_tokens_total", tier="a") == 3 * 4 + 2
    assert value(m, "qarr_router_completion_tokens_total", tier="b") == 2 * 5
    cost_b = (2 * PROMPT_TOKENS + 2 * 5) * PRICES["b"] / 1e6
    assert value(m, "qarr_router_estimated_cost_total", tier="b") == pytest.approx(cost_b)
    assert value(m, "qarr_router_in_flight_streams", tier="a") == 0
    assert value(m, "qarr_router_retries_total", tier="a") == 0
    assert value(m, "qarr_router_tier_up", tier="a") == 1
    assert value(m, "qarr_router_breaker_state", tier="a") == 0


async def test_tier_metrics_count_requests_and_read_engine_load(mesh):
    """A tier's /metrics counts its own requests and reports running/waiting/KV use from the engine."""
    for _ in range(3):
        await mesh.generate(PROMPT, tier="a", max_tokens=4)
    m = await mesh.scrape_tier("a")
    assert value(m, "qarr_tier_requests_total", tier="a", code="OK", finish_reason="length") == 3
    assert value(m, "qarr_tier_time_to_first_token_seconds_count", tier="a") == 3
    assert value(m, "qarr_tier_request_duration_seconds_count", tier="a") == 3
    assert value(m, "qarr_tier_prompt_tokens_total", tier="a") == 3 * PROMPT_TOKENS
    assert value(m, "qarr_tier_completion_tokens_total", tier="a") == 12
    assert value(m, "qarr_tier_running_requests", tier="a") == 0
    assert value(m, "qarr_tier_waiting_requests", tier="a") == 0
    assert value(m, "qarr_tier_kv_cache_usage_ratio", tier="a") == 0
    assert value(m, "qarr_tier_engine_up", tier="a") == 1
    # Tier b served nothing.
    assert value(await mesh.scrape_tier("b"), "qarr_tier_request_duration_seconds_count", tier="b") == 0


async def test_in_flight_and_engine_load_show_streams_while_they_run():
    """While two streams run, the router's in-flight gauge and the tier's running/KV gauges show them."""
    mesh = await start_mesh(token_delay_s=0.05)
    try:
        tasks = [asyncio.create_task(mesh.generate(PROMPT, tier="a", max_tokens=20)) for _ in range(2)]
        await asyncio.sleep(0.5)
        router, tier = await mesh.scrape_router(), await mesh.scrape_tier("a")
        await asyncio.gather(*tasks)
        assert value(router, "qarr_router_in_flight_streams", tier="a") == 2
        assert value(tier, "qarr_tier_running_requests", tier="a") == 2
        assert value(tier, "qarr_tier_kv_cache_usage_ratio", tier="a") == pytest.approx(2 / 64)
        assert value(await mesh.scrape_router(), "qarr_router_in_flight_streams", tier="a") == 0
    finally:
        await stop_mesh(mesh)


async def test_latency_over_budget_is_counted_against_the_budget():
    """A 1 ms budget on a 20 ms stream counts as over budget; a 60 s budget does not; no budget is not counted."""
    mesh = await start_mesh(token_delay_s=0.005)
    try:
        await mesh.generate(PROMPT, tier="a", max_tokens=4, budget_ms=1)
        await mesh.generate(PROMPT, tier="a", max_tokens=4, budget_ms=60_000)
        await mesh.generate(PROMPT, tier="a", max_tokens=4)
        m = await mesh.scrape_router()
        assert value(m, "qarr_router_budgeted_requests_total", tier="a") == 2
        assert value(m, "qarr_router_over_budget_requests_total", tier="a") == 1
        assert value(m, "qarr_router_requests_total", tier="a", code="OK", finish_reason="length") == 3
    finally:
        await stop_mesh(mesh)


async def test_breaker_gauge_opens_when_a_tier_fails(mesh):
    """When tier b's engine dies, its breaker gauge goes closed -> open, the transition is counted and failures are labelled."""
    before = await mesh.scrape_router()
    assert value(before, "qarr_router_breaker_state", tier="b") == 0
    assert ("qarr_router_breaker_transitions_total", (("from_state", "closed"), ("tier", "b"), ("to_state", "open"))) not in before

    mesh.engines["b"].die()
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await mesh.generate(PROMPT, tier="b")
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    await mesh.wait_router_sees("b", False)
    deadline = time.monotonic() + 5
    while value(m := await mesh.scrape_router(), "qarr_router_breaker_state", tier="b") != 1:
        assert time.monotonic() < deadline, "breaker gauge never opened"
        await asyncio.sleep(0.05)

    assert value(m, "qarr_router_breaker_transitions_total", tier="b", from_state="closed", to_state="open") == 1
    assert value(m, "qarr_router_tier_up", tier="b") == 0
    assert value(m, "qarr_router_breaker_state", tier="a") == 0
    assert value(m, "qarr_router_requests_total", tier="b", code="UNAVAILABLE", finish_reason="error") == 1
    assert value(m, "qarr_router_in_flight_streams", tier="b") == 0
    assert value(await mesh.scrape_tier("b"), "qarr_tier_engine_up", tier="b") == 0
    assert value(await mesh.scrape_tier("b"), "qarr_tier_requests_total", tier="b", code="UNAVAILABLE", finish_reason="error") == 1


async def test_rejected_requests_are_counted_without_a_tier(mesh):
    """A request naming an unknown tier is counted under tier="none" with its status and reason."""
    with pytest.raises(grpc.aio.AioRpcError):
        await mesh.generate(PROMPT, tier="nope")
    m = await mesh.scrape_router()
    assert value(m, "qarr_router_requests_total", tier="none", code="INVALID_ARGUMENT", finish_reason="none") == 1
    assert value(m, "qarr_router_routing_decisions_total", tier="none", reason="UNKNOWN_TIER") == 1


async def test_cancelled_stream_is_counted_as_cancelled():
    """A caller that hangs up mid-stream is counted as CANCELLED on router and tier, and the in-flight gauge returns to 0."""
    mesh = await start_mesh(token_delay_s=0.02)
    try:
        task = asyncio.create_task(mesh.generate(PROMPT, tier="a", max_tokens=200))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        deadline = time.monotonic() + 5
        while ("qarr_router_requests_total", (("code", "CANCELLED"), ("finish_reason", "cancelled"), ("tier", "a"))) not in (m := await mesh.scrape_router()):
            assert time.monotonic() < deadline, "cancelled request never counted"
            await asyncio.sleep(0.05)
        assert value(m, "qarr_router_in_flight_streams", tier="a") == 0
        t = await mesh.scrape_tier("a")
        assert value(t, "qarr_tier_requests_total", tier="a", code="CANCELLED", finish_reason="cancelled") == 1
    finally:
        await stop_mesh(mesh)


async def test_metric_names_and_labels_follow_prometheus_conventions(mesh):
    """Every qarr_ metric: counters end in _total, histograms in _seconds, labels from a fixed small set
    (a replica label only on the per-replica metrics, qarr_router_replica_*)."""
    await mesh.generate(PROMPT, tier="a")
    allowed = {"tier", "code", "finish_reason", "reason", "from_state", "to_state", "le"}
    for port in (mesh.router.metrics.port, mesh.tiers["a"].metrics.port):
        import urllib.request

        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        families = [f for f in text_string_to_metric_families(text) if f.name.startswith("qarr_")]
        assert len(families) >= 8
        for f in families:
            assert f.name.startswith(("qarr_router_", "qarr_tier_")), f.name
            if f.type == "counter":
                assert all(s.name.endswith(("_total", "_created")) for s in f.samples), f.name
            if f.type == "histogram":
                assert f.name.endswith("_seconds"), f.name
            for s in f.samples:
                labels = set(s.labels) - ({"replica"} if f.name.startswith("qarr_router_replica_") else set())
                assert labels <= allowed, (f.name, s.labels)
                if f.name.endswith("_ratio"):
                    assert 0 <= s.value <= 1


def test_breaker_api_drives_gauge_and_transitions():
    """set_breaker_state / breaker_transition move the gauge (0 closed, 1 open, 2 half-open) and count each change."""
    t = RouterTelemetry()
    t.declare_tiers(["x"])
    t.set_tier_health("x", False)  # health no longer drives the breaker
    t.breaker_transition("x", "closed", "open")
    t.set_breaker_state("x", "half_open")
    t.set_breaker_state("x", "half_open")  # no change, no transition
    t.breaker_transition("x", "BREAKER_STATE_HALF_OPEN", 1)  # proto enum names and values work too
    from prometheus_client import generate_latest

    m = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(generate_latest(t.registry).decode()) for s in f.samples}
    assert value(m, "qarr_router_breaker_state", tier="x") == 0
    assert value(m, "qarr_router_breaker_transitions_total", tier="x", from_state="closed", to_state="open") == 1
    assert value(m, "qarr_router_breaker_transitions_total", tier="x", from_state="open", to_state="half_open") == 1
    assert value(m, "qarr_router_breaker_transitions_total", tier="x", from_state="half_open", to_state="closed") == 1
    assert value(m, "qarr_router_tier_up", tier="x") == 0
    with pytest.raises(ValueError):
        t.set_breaker_state("x", "ajar")


def test_scrape_helper_reads_a_live_server():
    """The scrape helper used above reads a real HTTP /metrics (guards the helper itself)."""
    from mesh.observability import new_registry, start_metrics_server

    t = RouterTelemetry(new_registry())
    t.declare_tiers(["x"])
    server = start_metrics_server(t.registry, "127.0.0.1", 0)
    try:
        m = scrape(server.port)
        assert value(m, "qarr_router_breaker_state", tier="x") == 0
        assert any(name == "process_cpu_seconds_total" for name, _ in m)
    finally:
        server.close()
