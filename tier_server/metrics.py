"""Tier telemetry: engine load read at scrape time, one observation per request, a span per request.

Engine load (running, waiting, KV-cache use) is read from `engine.load()` when
/metrics is scraped, so the serving path pays nothing for it. The servicer calls
`request_started` once, `first_token` once and `finished` once per request.
"""

from __future__ import annotations

import sys
import time

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from mesh.observability import LATENCY_BUCKETS, TraceContext, new_registry
from qarr.v1 import common_pb2

FINISH_NAMES = {v: k.removeprefix("FINISH_REASON_").lower() for k, v in common_pb2.FinishReason.items()}
_SPAN_NAME = "qarr.v1.TierService/Generate"


class EngineLoadCollector(Collector):
    """qarr_tier_running_requests, _waiting_requests, _kv_cache_usage_ratio, _engine_up, read from the engine."""

    def __init__(self, tier: str, engine) -> None:
        self.tier = tier
        self.engine = engine

    def collect(self):
        load = self.engine.load()
        families = (
            ("qarr_tier_running_requests", "Requests the engine is running now.", load.running),
            ("qarr_tier_waiting_requests", "Requests queued in the engine, not yet running.", load.waiting),
            ("qarr_tier_kv_cache_usage_ratio", "Fraction of the KV cache in use, 0-1.", load.kv_cache_usage),
            ("qarr_tier_engine_up", "1 while the engine can serve, 0 once it died.", 0 if self.engine.dead else 1),
        )
        for name, doc, value in families:
            g = GaugeMetricFamily(name, doc, labels=["tier"])
            g.add_metric([self.tier], value)
            yield g


class TierTelemetry:
    """Metrics and tracer of one tier server."""

    def __init__(self, tier: str, engine, registry: CollectorRegistry | None = None, tracer=None) -> None:
        self.tier = tier
        self.registry = registry if registry is not None else new_registry()
        self.tracer = tracer
        r = self.registry
        r.register(EngineLoadCollector(tier, engine))
        self.requests = Counter("qarr_tier_requests", "Finished Generate calls by gRPC status and finish reason.", ["tier", "code", "finish_reason"], registry=r)
        self.ttft = Histogram("qarr_tier_time_to_first_token_seconds", "Time from request arrival at the tier to its first text message.", ["tier"], buckets=LATENCY_BUCKETS, registry=r)
        self.latency = Histogram("qarr_tier_request_duration_seconds", "Time from request arrival at the tier to its last message.", ["tier"], buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("qarr_tier_prompt_tokens", "Prompt tokens of finished requests.", ["tier"], registry=r)
        self.completion_tokens = Counter("qarr_tier_completion_tokens", "Tokens generated for finished requests.", ["tier"], registry=r)
        for m in (self.ttft, self.latency, self.prompt_tokens, self.completion_tokens):
            m.labels(tier)

    def request_started(self, context) -> TierRequest:
        return TierRequest(self, context)


class TierRequest:
    __slots__ = ("t", "started", "ttft", "span", "request_id")

    def __init__(self, t: TierTelemetry, context) -> None:
        self.t = t
        self.started = time.perf_counter()
        self.ttft: float | None = None
        self.span = None
        self.request_id = ""  # set by `identify` once the request passed its checks
        if t.tracer is not None:
            from opentelemetry.trace import SpanKind

            self.span = t.tracer.start_span(
                _SPAN_NAME, context=TraceContext.extract(context.invocation_metadata()), kind=SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.service": "qarr.v1.TierService", "rpc.method": "Generate",
                            "qarr.tier": t.tier},
            )

    def identify(self, request_id: str) -> None:
        """The caller's request id, once checked (bounded), for the span and the log."""
        self.request_id = request_id
        if self.span is not None:
            self.span.set_attribute("qarr.request_id", request_id)

    def first_token(self) -> None:
        self.ttft = time.perf_counter() - self.started

    def finished(self, context, last) -> None:
        """Call from `finally` (an exception in flight is read from sys.exc_info()); `last` is the closing message or None."""
        total = time.perf_counter() - self.started
        t = self.t
        code = context.code()
        if isinstance(code, grpc.StatusCode):
            code = code.name
        elif code is None:
            exc = sys.exc_info()[1]
            if exc is None:
                code = "OK" if last is not None else "CANCELLED"
            else:
                # CancelledError / GeneratorExit: the caller went away; an Exception: a bug grpc reports as UNKNOWN.
                code = "UNKNOWN" if isinstance(exc, Exception) else "CANCELLED"
        else:
            code = str(code)
        if last is not None:
            finish_reason = FINISH_NAMES.get(last.finish_reason, "unspecified")
        else:
            finish_reason = "cancelled" if code in ("CANCELLED", "DEADLINE_EXCEEDED") else "error"
        tier = t.tier
        t.requests.labels(tier, code, finish_reason).inc()
        t.latency.labels(tier).observe(total)
        if self.ttft is not None:
            t.ttft.labels(tier).observe(self.ttft)
        if last is not None:
            t.prompt_tokens.labels(tier).inc(last.usage.prompt_tokens)
            t.completion_tokens.labels(tier).inc(last.usage.completion_tokens)
        span = self.span
        if span is not None:
            from opentelemetry.trace import Status, StatusCode

            span.set_attributes({"rpc.grpc.status_code": code, "qarr.finish_reason": finish_reason})
            if last is not None:
                span.set_attributes({"qarr.prompt_tokens": last.usage.prompt_tokens, "qarr.completion_tokens": last.usage.completion_tokens})
            if self.ttft is not None:
                span.set_attribute("qarr.ttft_ms", self.ttft * 1000)
            if code not in ("OK", "CANCELLED"):
                span.set_status(Status(StatusCode.ERROR, code))
            span.end()
