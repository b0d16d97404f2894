"""Router telemetry: Prometheus metrics, one trace per request, one log line per request.

The relay calls a handful of methods; all instrumentation lives here so the relay
stays a byte relay. Nothing here runs per chunk: `first_token()` once, everything
else when a request starts, is routed, or finishes. With no tracer, no span
objects are created and no trace metadata is sent.

    rq = telemetry.request_started(request_id, request, started, metadata)
    call = backend.generate(raw, ..., metadata=rq.routed(tier, reason))   # each attempt
    ttft = rq.first_token()                                               # first text chunk
    rq.finished(status_name, last_chunk, error)                           # in `finally`, served or refused

Metric names (all `qarr_router_`): see docs/observability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mesh.observability import FIELDS_ATTR, LATENCY_BUCKETS, TraceContext, new_registry
from qarr.v1 import common_pb2, router_service_pb2 as pb

request_log = logging.getLogger("qarr.router.requests")

LAST_MESSAGE_TAG = 0x10
NO_TIER = "none"
# Breaker states as gauge values (also the order of BreakerState in the proto, minus one).
BREAKER_VALUE = {"closed": 0, "open": 1, "half_open": 2}
FINISH_NAMES = {v: k.removeprefix("FINISH_REASON_").lower() for k, v in common_pb2.FinishReason.items()}
_SPAN_NAME = "qarr.v1.RouterService/Generate"
_ATTEMPT_SPAN_NAME = "qarr.v1.TierService/Generate"


def _finish_reason_without_last_message(code: str) -> str:
    return "cancelled" if code in ("CANCELLED", "DEADLINE_EXCEEDED") else "error"


def breaker_state_name(state) -> str:
    """'closed' | 'open' | 'half_open' from a string, a BreakerState value or an enum with `.name`/`.value`."""
    if isinstance(state, int):
        state = pb.BreakerState.Name(state)
    else:
        state = getattr(state, "name", None) or getattr(state, "value", state)
    name = str(state).lower().removeprefix("breaker_state_").replace("-", "_")
    if name not in BREAKER_VALUE:
        raise ValueError(f"unknown breaker state {state!r}; expected one of {list(BREAKER_VALUE)}")
    return name


class _TierSeries:
    """One tier's metric children, looked up once (prometheus_client's labels() costs ~5 us a call)."""

    __slots__ = ("in_flight", "ttft", "latency", "budgeted", "over_budget", "prompt_tokens", "completion_tokens", "cost", "retries", "requests", "decisions")

    def __init__(self, t: RouterTelemetry, tier: str) -> None:
        self.in_flight = t.in_flight.labels(tier)
        self.ttft = t.ttft.labels(tier)
        self.latency = t.latency.labels(tier)
        self.budgeted = t.budgeted.labels(tier)
        self.over_budget = t.over_budget.labels(tier)
        self.prompt_tokens = t.prompt_tokens.labels(tier)
        self.completion_tokens = t.completion_tokens.labels(tier)
        self.cost = t.cost.labels(tier)
        self.retries = t.retries.labels(tier)
        self.requests: dict[tuple[str, str], object] = {}  # (code, finish_reason) -> child
        self.decisions: dict[str, object] = {}  # reason -> child


class RouterTelemetry:
    """Metrics, tracer and request log for one router. One instance per RouterServer."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        prices: Mapping[str, float] | None = None,
        tracer=None,
        log_prompts: bool = False,
    ) -> None:
        self.registry = registry if registry is not None else new_registry()
        self.prices = dict(prices or {})  # tier -> price per million tokens (prompt + completion)
        self.tracer = tracer
        self.log_prompts = log_prompts
        self._breaker: dict[str, str] = {}
        self._series: dict[str, _TierSeries] = {}
        self._health: dict[str, bool | None] = {}
        r = self.registry
        self.requests = Counter("qarr_router_requests", "Finished Generate calls by serving tier, gRPC status and finish reason.", ["tier", "code", "finish_reason"], registry=r)
        self.decisions = Counter("qarr_router_routing_decisions", "Tier choices by tier and reason (pinned, fallback...); one per attempt.", ["tier", "reason"], registry=r)
        self.ttft = Histogram("qarr_router_time_to_first_token_seconds", "Time from request arrival to the first text chunk relayed.", ["tier"], buckets=LATENCY_BUCKETS, registry=r)
        self.latency = Histogram("qarr_router_request_duration_seconds", "End-to-end time of a Generate call, arrival to last message.", ["tier"], buckets=LATENCY_BUCKETS, registry=r)
        self.budgeted = Counter("qarr_router_budgeted_requests", "Finished requests that carried a latency budget.", ["tier"], registry=r)
        self.over_budget = Counter("qarr_router_over_budget_requests", "Finished requests whose end-to-end latency exceeded their budget.", ["tier"], registry=r)
        self.prompt_tokens = Counter("qarr_router_prompt_tokens", "Prompt tokens of finished requests, as the serving tier counted them.", ["tier"], registry=r)
        self.completion_tokens = Counter("qarr_router_completion_tokens", "Completion tokens delivered to callers.", ["tier"], registry=r)
        self.cost = Counter("qarr_router_estimated_cost", "Estimated cost: tokens x the tier's price per million tokens (price units).", ["tier"], registry=r)
        # multiprocess_mode: how `--workers N` sums a gauge over the worker processes (router/workers.py).
        self.in_flight = Gauge("qarr_router_in_flight_streams", "Generate streams open to a tier now.", ["tier"], registry=r, multiprocess_mode="livesum")
        self.retries = Counter("qarr_router_retries", "Attempts abandoned for another replica or tier, by the tier that failed.", ["tier"], registry=r)
        self.breaker_state = Gauge("qarr_router_breaker_state", "Circuit breaker state per tier (its best replica's): 0 closed, 1 open, 2 half-open.", ["tier"], registry=r, multiprocess_mode="liveall")
        self.breaker_transitions = Counter("qarr_router_breaker_transitions", "Tier-level circuit breaker state changes.", ["tier", "from_state", "to_state"], registry=r)
        self.tier_up = Gauge("qarr_router_tier_up", "1 while some replica of the tier says SERVING, else 0.", ["tier"], registry=r, multiprocess_mode="livemax")
        self.price = Gauge("qarr_router_tier_price_per_million_tokens", "Configured price per million tokens of each tier.", ["tier"], registry=r, multiprocess_mode="livemax")
        # Per replica: the only metrics with a replica label (its address). Series of a replica that
        # leaves the mesh are removed, so their number follows the replicas there are.
        rl = ["tier", "replica"]
        self.replica_requests = Counter("qarr_router_replica_requests", "Finished Generate calls by the replica that served them.", rl, registry=r)
        self.replica_in_flight = Gauge("qarr_router_replica_in_flight_streams", "Generate streams open to a replica now.", rl, registry=r, multiprocess_mode="livesum")
        self.replica_up = Gauge("qarr_router_replica_up", "1 while the replica's health check says SERVING, else 0.", rl, registry=r, multiprocess_mode="livemax")
        self.replica_breaker = Gauge("qarr_router_replica_breaker_state", "Circuit breaker state per replica: 0 closed, 1 open, 2 half-open.", rl, registry=r, multiprocess_mode="liveall")
        self.replica_ttft = Gauge("qarr_router_replica_live_ttft_seconds", "Live TTFT estimate of a replica (EWMA; the slowest worker's with --workers).", rl, registry=r, multiprocess_mode="livemax")
        self.replica_decode = Gauge("qarr_router_replica_live_decode_tokens_per_second", "Live per-stream decode-rate estimate of a replica (EWMA; the slowest worker's with --workers).", rl, registry=r, multiprocess_mode="livemin")
        self._replicas: dict[tuple[str, str], object] = {}  # (tier, replica) -> its requests child

    # --- per tier, not per request ---------------------------------------

    def series(self, tier: str) -> _TierSeries:
        s = self._series.get(tier)
        if s is None:
            s = self._series[tier] = _TierSeries(self, tier)
        return s

    def count_request(self, tier: str, code: str, finish_reason: str) -> None:
        requests = self.series(tier).requests
        child = requests.get((code, finish_reason))
        if child is None:
            child = requests[(code, finish_reason)] = self.requests.labels(tier, code, finish_reason)
        child.inc()

    def routing_decision(self, tier: str, reason: str) -> None:
        decisions = self.series(tier).decisions
        child = decisions.get(reason)
        if child is None:
            child = decisions[reason] = self.decisions.labels(tier, reason)
        child.inc()

    def declare_tiers(self, names) -> None:
        """Create every tier's series at zero, so dashboards and rate() see them before traffic."""
        for name in names:
            self.series(name)
            self.tier_up.labels(name)
            self.price.labels(name).set(self.prices.get(name, 0.0))
            if name not in self._breaker:
                self.set_breaker_state(name, "closed")

    def set_breaker_state(self, tier: str, state) -> None:
        """Set the breaker gauge; counts a transition if the state changed."""
        new = breaker_state_name(state)
        old = self._breaker.get(tier)
        if old is not None and old != new:
            self.breaker_transitions.labels(tier, old, new).inc()
        self._breaker[tier] = new
        self.breaker_state.labels(tier).set(BREAKER_VALUE[new])

    def breaker_transition(self, tier: str, old, new) -> None:
        """The breaker moved from `old` to `new` (its own callback; same effect as set_breaker_state(new))."""
        self._breaker.setdefault(tier, breaker_state_name(old))
        self.set_breaker_state(tier, new)

    def breaker_states(self) -> dict[str, str]:
        return dict(self._breaker)

    def tier_health(self) -> dict[str, bool | None]:
        return dict(self._health)

    def set_tier_health(self, tier: str, serving: bool | None) -> None:
        """Health as the router sees it (None: not heard from yet). Idempotent."""
        if self._health.get(tier, ...) == serving:
            return
        self._health[tier] = serving
        self.tier_up.labels(tier).set(1 if serving else 0)

    async def watch_pool(self, pool, interval_s: float = 0.25) -> None:
        """Mirror each tier's and replica's health, breaker state, in-flight count and live latency into
        the gauges, off the request path.

        Reading `breaker.state` is what moves an OPEN breaker whose time is up to HALF_OPEN,
        so the gauge shows what the next request would see.
        """
        while True:
            self.mirror(pool)
            await asyncio.sleep(interval_s)

    def mirror(self, pool) -> None:
        seen = set()
        for t in pool.tiers.values():
            if t.name not in self._breaker:
                self.declare_tiers([t.name])  # a tier added by a config reload
            self.set_tier_health(t.name, t.serving)
            self.set_breaker_state(t.name, t.breaker_state)
            for b in t.replicas.values():
                labels = (t.name, b.address)
                seen.add(labels)
                self.replica_series(*labels)
                self.replica_up.labels(*labels).set(1 if b.serving else 0)
                self.replica_in_flight.labels(*labels).set(b.in_flight)
                self.replica_breaker.labels(*labels).set(BREAKER_VALUE[breaker_state_name(b.breaker.state)])
                ttft, rate = b.stats.ttft_estimate_ms, b.stats.decode_estimate_tps
                if ttft is not None:
                    self.replica_ttft.labels(*labels).set(ttft / 1000)
                if rate is not None:
                    self.replica_decode.labels(*labels).set(rate)
        for labels in set(self._replicas) - seen:  # replicas that left: drop their series
            del self._replicas[labels]
            for metric in (self.replica_requests, self.replica_up, self.replica_in_flight, self.replica_breaker,
                           self.replica_ttft, self.replica_decode):
                with contextlib.suppress(KeyError):
                    metric.remove(*labels)

    def replica_series(self, tier: str, replica: str):
        """The replica's finished-requests counter child (created at zero)."""
        child = self._replicas.get((tier, replica))
        if child is None:
            child = self._replicas[(tier, replica)] = self.replica_requests.labels(tier, replica)
        return child

    # --- per request -----------------------------------------------------

    def request_started(self, request_id: str, request, started: float | None = None, metadata=None) -> RouterRequest:
        """`started`: time.perf_counter() at arrival. `metadata`: a callable returning the incoming
        metadata (the trace parent), called only when tracing."""
        return RouterRequest(self, request_id, request, time.perf_counter() if started is None else started, metadata)


class RouterRequest:
    """One Generate call as the telemetry sees it. Created once per request; never touched per chunk."""

    __slots__ = ("t", "request_id", "request", "caller", "started", "ttft", "tier", "reason", "attempts", "retried", "budget_s", "span", "attempt_span",
                 "replica", "pick")

    def __init__(self, t: RouterTelemetry, request_id: str, request, started: float, metadata) -> None:
        self.t = t
        self.request_id = request_id
        self.request = request
        self.caller = ""  # the door's caller (auth on), for the log line
        self.started = started
        self.ttft: float | None = None
        self.tier = NO_TIER
        self.reason = ""
        self.replica = ""  # the replica that answered (set by the core)
        self.pick = ""  # why that replica (router/pick.py)
        self.attempts = 0
        self.retried: list[str] = []
        budget_ms = request.routing.latency_budget_ms if request is not None else 0
        # The routing policy may replace this with its class default.
        self.budget_s: float | None = budget_ms / 1000 if budget_ms else None
        self.span = None
        self.attempt_span = None
        if t.tracer is not None:
            from opentelemetry.trace import SpanKind

            parent = TraceContext.extract(metadata() if metadata is not None else None)
            self.span = t.tracer.start_span(
                _SPAN_NAME, context=parent, kind=SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.service": "qarr.v1.RouterService", "rpc.method": "Generate",
                            "qarr.request_id": request_id},
            )

    def routed(self, tier: str, reason: str):
        """An attempt on `tier` begins; returns the gRPC metadata to send to it (None when not tracing).

        A second call means the previous attempt failed: it counts a retry of that tier.
        """
        t = self.t
        if self.attempts:
            previous = t.series(self.tier)
            previous.retries.inc()
            previous.in_flight.dec()
            self.retried.append(self.tier)
        self.attempts += 1
        self.tier = tier
        self.reason = reason
        t.routing_decision(tier, reason)
        t.series(tier).in_flight.inc()
        if self.span is None:
            return None
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        if self.attempt_span is not None:
            self.attempt_span.set_status(Status(StatusCode.ERROR, "retried on another tier"))
            self.attempt_span.end()
        self.attempt_span = t.tracer.start_span(
            _ATTEMPT_SPAN_NAME, context=trace.set_span_in_context(self.span), kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": "qarr.v1.TierService", "rpc.method": "Generate",
                        "qarr.tier": tier, "qarr.routing_reason": reason, "qarr.attempt": self.attempts},
        )
        return TraceContext.inject(self.attempt_span)

    def first_token(self) -> float:
        """The first text chunk was relayed; returns the TTFT in seconds."""
        self.ttft = time.perf_counter() - self.started
        return self.ttft

    def finished(self, code: str, last: bytes = b"", error=None) -> None:
        """The call ended with canonical status `code` (google.rpc.Code name); `last` is the last chunk
        from the tier; `error` the RouteError that ended it, if any (its reason goes in the log line)."""
        total = time.perf_counter() - self.started
        t = self.t
        tier = self.tier
        if code == "OK" and not (last and last[0] == LAST_MESSAGE_TAG):
            code = "CANCELLED"  # the caller went away before the tier's last message
        prompt_tokens = completion_tokens = 0
        if last:
            msg = pb.GenerateResponse.FromString(last)
            completion_tokens = msg.generated_tokens
            prompt_tokens = msg.usage.prompt_tokens
        if last and last[0] == LAST_MESSAGE_TAG:
            finish_reason = FINISH_NAMES.get(msg.finish_reason, "unspecified")
        elif not self.attempts:
            finish_reason = "none"  # refused before any tier was tried
        else:
            finish_reason = _finish_reason_without_last_message(code)
        t.count_request(tier, code, finish_reason)
        if not self.attempts and error is not None:
            t.routing_decision(NO_TIER, error.reason)  # refused before any tier was tried
        over_budget = None
        if self.attempts:
            s = t.series(tier)
            s.in_flight.dec()
            if self.replica:
                t.replica_series(tier, self.replica).inc()
            s.latency.observe(total)
            if self.ttft is not None:
                s.ttft.observe(self.ttft)
            if prompt_tokens:
                s.prompt_tokens.inc(prompt_tokens)
            if completion_tokens:
                s.completion_tokens.inc(completion_tokens)
            price = t.prices.get(tier)
            if price:
                s.cost.inc((prompt_tokens + completion_tokens) * price / 1e6)
            if self.budget_s is not None:
                s.budgeted.inc()
                over_budget = total > self.budget_s
                if over_budget:
                    s.over_budget.inc()
        trace_id = self._end_spans(code, finish_reason, prompt_tokens, completion_tokens, total) if self.span is not None else None
        if request_log.isEnabledFor(logging.INFO):
            fields = {
                "request_id": self.request_id, "tier": tier, "reason": self.reason, "status": code,
                "finish_reason": finish_reason, "attempts": self.attempts,
                "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                "ttft_ms": round(self.ttft * 1000, 1) if self.ttft is not None else None,
                "total_ms": round(total * 1000, 1),
            }
            if self.replica:
                fields["replica"] = self.replica
                fields["pick"] = self.pick
            if self.caller:
                fields["caller"] = self.caller
            if self.retried:
                fields["retried"] = self.retried
            if error is not None:
                fields["error"] = error.reason
            if self.budget_s is not None:
                fields["budget_ms"] = round(self.budget_s * 1000)
                fields["over_budget"] = over_budget
            if trace_id:
                fields["trace_id"] = trace_id
            if t.log_prompts and self.request is not None:
                fields["prompt"] = self.request.prompt or [[m.role, m.content] for m in self.request.messages]
            request_log.info("request finished", extra={FIELDS_ATTR: fields})

    def _end_spans(self, code: str, finish_reason: str, prompt_tokens: int, completion_tokens: int, total: float) -> str:
        from opentelemetry.trace import Status, StatusCode

        error = code not in ("OK", "CANCELLED")
        if self.attempt_span is not None:
            self.attempt_span.set_attribute("qarr.completion_tokens", completion_tokens)
            if error:
                self.attempt_span.set_status(Status(StatusCode.ERROR, code))
            self.attempt_span.end()
        span = self.span
        span.set_attributes({
            "rpc.grpc.status_code": code, "qarr.tier": self.tier, "qarr.routing_reason": self.reason,
            "qarr.attempts": self.attempts, "qarr.retries": len(self.retried), "qarr.finish_reason": finish_reason,
            "qarr.prompt_tokens": prompt_tokens, "qarr.completion_tokens": completion_tokens,
            "qarr.total_ms": total * 1000,
        })
        if self.retried:
            span.set_attribute("qarr.retried_tiers", self.retried)
        if self.ttft is not None:
            span.set_attribute("qarr.ttft_ms", self.ttft * 1000)
        if error:
            span.set_status(Status(StatusCode.ERROR, code))
        span.end()
        return format(span.get_span_context().trace_id, "032x")


def prices_from(tier_specs, profiles=None) -> dict[str, float]:
    """Price per million tokens per tier: the tier's config value, else its profile's."""
    prices: dict[str, float] = {}
    for spec in tier_specs:
        price = getattr(spec, "cost_per_million_tokens", None)
        if price is None and profiles is not None and spec.name in profiles.tiers:
            price = profiles.tiers[spec.name].cost_per_million_tokens
        if price:
            prices[spec.name] = float(price)
    return prices
