"""One trace per request across the router -> tier hop, with in-memory span exporters."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from opentelemetry.trace import SpanKind

from tests.observability.conftest import start_mesh, stop_mesh


async def finished_spans(exporter, count: int, timeout: float = 5.0):
    """The router span ends in the relay's `finally`, just after the caller saw the last message."""
    deadline = time.monotonic() + timeout
    while len(spans := exporter.get_finished_spans()) < count:
        assert time.monotonic() < deadline, f"only {len(spans)} of {count} spans finished"
        await asyncio.sleep(0.01)
    return spans


async def test_one_trace_links_router_and_tier_spans(traced_mesh):
    """One request gives one trace: router SERVER span -> attempt CLIENT span -> tier SERVER span, with routing attributes."""
    await traced_mesh.generate("tell me a story", tier="b", max_tokens=3, request_id="trace-me")
    router_spans = await finished_spans(traced_mesh.router_spans, 2)
    tier_spans = await finished_spans(traced_mesh.tier_spans, 1)
    assert len(router_spans) == 2 and len(tier_spans) == 1
    server = next(s for s in router_spans if s.kind == SpanKind.SERVER)
    attempt = next(s for s in router_spans if s.kind == SpanKind.CLIENT)
    (tier,) = tier_spans

    assert len({s.context.trace_id for s in (server, attempt, tier)}) == 1
    assert server.parent is None
    assert attempt.parent.span_id == server.context.span_id
    assert tier.parent.span_id == attempt.context.span_id
    assert tier.resource.attributes["service.name"] == "qarr-tier"
    assert server.resource.attributes["service.name"] == "qarr-router"

    assert server.name == "qarr.v1.RouterService/Generate"
    assert server.attributes["qarr.request_id"] == "trace-me"
    assert server.attributes["qarr.tier"] == "b"
    assert server.attributes["qarr.routing_reason"] == "pinned"
    assert server.attributes["qarr.attempts"] == 1
    assert server.attributes["qarr.retries"] == 0
    assert server.attributes["qarr.completion_tokens"] == 3
    assert server.attributes["qarr.prompt_tokens"] == 4
    assert server.attributes["rpc.grpc.status_code"] == "OK"
    assert server.attributes["qarr.ttft_ms"] > 0
    assert attempt.attributes["qarr.tier"] == "b"
    assert tier.attributes["qarr.request_id"] == "trace-me"
    assert tier.attributes["qarr.completion_tokens"] == 3


async def test_each_request_gets_its_own_trace(traced_mesh):
    """Two requests give two traces, each with its own tier span."""
    await traced_mesh.generate(tier="a")
    await traced_mesh.generate(tier="b")
    router_spans = await finished_spans(traced_mesh.router_spans, 4)
    tier_spans = await finished_spans(traced_mesh.tier_spans, 2)
    traces = {s.context.trace_id for s in router_spans}
    assert len(traces) == 2
    assert {s.context.trace_id for s in tier_spans} == traces


async def test_failed_request_marks_its_spans_as_errors(traced_mesh):
    """A tier failure sets ERROR status on the router span and records the gRPC code."""
    traced_mesh.engines["a"].die()
    with pytest.raises(grpc.aio.AioRpcError):
        await traced_mesh.generate(tier="a")
    router_spans = await finished_spans(traced_mesh.router_spans, 2)
    server = next(s for s in router_spans if s.kind == SpanKind.SERVER)
    assert server.attributes["rpc.grpc.status_code"] == "UNAVAILABLE"
    assert not server.status.is_ok


async def test_router_without_tracer_creates_no_spans_and_sends_no_trace_context():
    """With tracing off on the router, it creates no span and the tier's span has no parent (no traceparent sent)."""
    mesh = await start_mesh(tracing=True, router_tracing=False)
    try:
        assert mesh.router.telemetry.tracer is None
        rq = mesh.router.telemetry.request_started("x", None)
        assert rq.span is None and rq.routed("a", "pinned") is None
        rq.finished("OK")
        await mesh.generate(tier="a")
        (tier,) = await finished_spans(mesh.tier_spans, 1)
        assert tier.parent is None
    finally:
        await stop_mesh(mesh)


def test_otlp_endpoint_exports_spans_to_a_collector():
    """With an OTLP endpoint set, spans reach an OTLP/gRPC collector (a real in-process receiver) with the service name."""
    from concurrent import futures

    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    from mesh.observability import tracer_provider
    from tests.harness import free_port

    received = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            received.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    port = free_port()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        provider = tracer_provider("qarr-router", f"http://127.0.0.1:{port}")
        provider.get_tracer("t").start_span("qarr.v1.RouterService/Generate").end()
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        server.stop(0)
    spans = [(rs, s) for r in received for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [s.name for _, s in spans] == ["qarr.v1.RouterService/Generate"]
    service = {a.key: a.value.string_value for a in spans[0][0].resource.attributes}["service.name"]
    assert service == "qarr-router"


def test_no_endpoint_means_no_tracer_provider():
    """Without an endpoint or exporter, no provider is built (the servers then hold no tracer)."""
    from mesh.observability import tracer_provider

    assert tracer_provider("qarr-router", None) is None
    assert tracer_provider("qarr-router", "") is None
