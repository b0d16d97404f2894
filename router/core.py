"""The router core, free of any transport: admit → check → choose tiers → open a tier stream → relay.

    router = Router(pool, config, profiles, telemetry)
    async for chunk in router.route(raw_request, Call(time_remaining)):
        ...   # qarr.v1.GenerateResponse bytes as the tier sent them; the last one also carries the router's fields
    # a refused or failed request raises a RouteError (router/errors.py)

Transport adapters (gRPC: grpc_service.py) translate RouteErrors in one table
each; they never re-implement routing, retries or limits. Every request, served
or refused, ends in one place here: one metrics update and one log line.

The hot path does no per-chunk parsing: a tier's last message is the only one
whose encoding starts with field 2 (finish_reason), so one byte tells it apart,
and the router appends its own fields to it (protobuf merges concatenated
messages; the later value of a field wins). Per request the core parses the
request once, and the first and last messages once each at the end (for the
replica's load and live latency, and the log line).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import grpc

from mesh.config import DEFAULT_MAX_TOKENS, MeshConfig
from qarr.v1 import common_pb2, router_service_pb2 as pb, tier_service_pb2
from router.backends import Backend, BackendPool
from router.breaker import State
from router.choose import Candidate, RequestView, choose_tier
from router.classify import Signals, classify
from router.errors import CallerBusy, Overloaded, RouteError, StreamInterrupted
from router.pick import affinity_key
from router.profiles import Profiles, TierProfile
from router.request import parse_request
from router.retry_budget import RetryBudget
from router.telemetry import RouterTelemetry, prices_from
from router.tokens import TokenCounter, upper_bound
from router.upstream import open_upstream

LAST_MESSAGE_TAG = 0x10  # field 2, varint: finish_reason


def _being_cancelled() -> bool:
    """Whether the current task has been asked to stop (its caller went away, its deadline passed)."""
    cancelling = getattr(asyncio.current_task(), "cancelling", None)  # Python 3.11+
    return cancelling is not None and cancelling() > 0


def _no_deadline() -> float | None:
    return None


@dataclass(slots=True)
class Call:
    """What the core needs from the transport about one call."""

    time_remaining: Callable[[], float | None] = _no_deadline  # seconds to the caller's deadline; None: none
    metadata: Callable[[], Sequence | None] | None = None  # the incoming metadata (trace parent), read only when tracing
    caller: str = ""  # who is calling, as the door's token check named it ("" when auth is off)
    # Set by the core once a tier has answered, before the first chunk is yielded: who serves the call
    # (an adapter that must send headers before the stream starts, like HTTP, reads them there).
    tier: str = ""
    routing_reason: str = ""
    attempts: int = 0
    replica: str = ""  # the address of the tier's replica


@dataclass(frozen=True, slots=True)
class LiveLatency:
    """Live estimates (router/live.py); None: too few streams yet."""

    ttft_ms: float | None
    decode_tps: float | None
    samples: int


@dataclass(frozen=True, slots=True)
class ReplicaState:
    """One replica of a tier as ListTiers shows it."""

    address: str
    serving: bool | None
    breaker: State
    in_flight: int
    load: common_pb2.Load
    live: LiveLatency
    served: int


@dataclass(slots=True, eq=False)
class Relay:
    """One tier stream being relayed, as the router's drain and stall checks see it (never read per chunk)."""

    backend: Backend
    call: grpc.aio.UnaryStreamCall
    last: bytes  # the last message relayed: a stalled stream keeps the same one
    seen: bytes | None = None  # `last` when cut_stalled() last looked
    still_since: float = 0.0  # since when cut_stalled() has seen `last` unchanged
    cut: str = ""  # why the router ended it: CUT_DRAIN or CUT_STALLED


CUT_DRAIN, CUT_STALLED = "drain", "stalled"


@dataclass(frozen=True, slots=True)
class TierState:
    """One tier as ListTiers (or /v1/models) shows it: aggregates over its replicas, and each replica."""

    name: str
    model: str
    quantization: str
    address: str  # how its replicas are found: an address, addresses comma-separated, or dns:NAME:PORT
    max_model_len: int
    serving: bool | None  # None: not heard from yet
    breaker: State
    in_flight: int
    load: common_pb2.Load
    profile: TierProfile | None
    replicas: tuple[ReplicaState, ...] = ()
    live: LiveLatency = LiveLatency(None, None, 0)


class Router:
    def __init__(self, pool: BackendPool, config: MeshConfig, profiles: Profiles, telemetry: RouterTelemetry | None = None) -> None:
        self.pool = pool
        self.config = config
        self.profiles = profiles
        self.telemetry = telemetry if telemetry is not None else RouterTelemetry()
        self.budget = RetryBudget(config.retry.budget_ratio, config.retry.budget_burst)
        self.tokens = TokenCounter()
        self.in_flight = 0
        self.requests = 0  # breaks the replica picker's ties
        self._peak_in_flight = 0  # highest in_flight since take_peak_in_flight() was last called
        self._relaying: set[Relay] = set()  # tier streams being relayed (cut_streams and cut_stalled end them)
        self.in_flight_by_caller: dict[str, int] = {}  # only callers counted against max_in_flight_per_caller
        self._trailers: dict[tuple[str, str, int, str, str], bytes] = {}

    async def apply(self, config: MeshConfig, profiles: Profiles) -> None:
        """Switch to a new config and profiles (hot reload); streams in flight keep their tier."""
        gone = self.pool.swap(config)  # no await between the swap and the new config: choices stay consistent
        self.config, self.profiles = config, profiles
        self.telemetry.prices = prices_from(config.tiers, profiles)
        self.budget.configure(config.retry.budget_ratio, config.retry.budget_burst)
        self._trailers = {}  # they name the accuracy predictor in force
        await self.pool.retire(gone)

    def cut_streams(self) -> int:
        """End every stream being relayed now (the end of a drain's grace): each caller gets the count of tokens
        delivered and UNAVAILABLE, rather than the bare cancel gRPC gives calls still open when its grace is
        over. Returns how many were cut."""
        for relay in self._relaying:
            relay.cut = CUT_DRAIN
            relay.call.cancel()
        return len(self._relaying)

    def cut_stalled(self, now: float, stall_s: float) -> int:
        """End the streams whose tier has not answered a health check since `stall_s` ago and that relayed
        nothing for as long (a hung or black-holed tier: gRPC keepalive does not end them). A stream that is
        slow because its caller does not read is left alone: its tier still answers. Returns how many."""
        cut = 0
        for relay in self._relaying:
            if relay.last is not relay.seen:
                relay.seen, relay.still_since = relay.last, now
                continue
            silent_since = relay.backend.silent_since
            if silent_since is not None and now - silent_since >= stall_s and now - relay.still_since >= stall_s:
                relay.cut = CUT_STALLED
                relay.call.cancel()
                cut += 1
        return cut

    def take_peak_in_flight(self) -> int:
        """The most streams relayed at once since the last call (for releasing memory after a spike)."""
        peak, self._peak_in_flight = self._peak_in_flight, self.in_flight
        return peak

    def ready(self) -> bool:
        """Some replica of some tier is SERVING and its breaker lets traffic through: the router can serve now."""
        return any(t.ready() for t in self.pool.tiers.values())

    def predictor(self) -> str:
        """The id of the accuracy predictor in force ("" when the tiers' profiled accuracy ranks them)."""
        predictor = self.profiles.accuracy_predictor
        return predictor.id if predictor is not None else ""

    def tiers(self) -> list[TierState]:
        states = []
        for t in self.pool.tiers.values():
            spec = t.spec
            replicas = tuple(
                ReplicaState(
                    address=b.address, serving=b.serving, breaker=b.breaker.state, in_flight=b.in_flight, load=b.load,
                    live=LiveLatency(b.stats.ttft_estimate_ms, b.stats.decode_estimate_tps, b.stats.ttft_samples),
                    served=b.served,
                )
                for b in t.replicas.values()
            )
            live = t.live()
            decode = 1000 / live.tpot_ms if live.tpot_ms else None
            states.append(TierState(
                name=spec.name, model=spec.model, quantization=spec.quantization,
                address=f"dns:{spec.dns}" if spec.dns else ",".join(spec.static_addresses),
                max_model_len=spec.max_model_len, serving=t.serving, breaker=t.breaker_state, in_flight=t.in_flight,
                load=t.load, profile=self.profiles.tiers.get(spec.name), replicas=replicas,
                live=LiveLatency(live.ttft_ms, decode, sum(r.live.samples for r in replicas)),
            ))
        return states

    async def route(self, raw: bytes, call: Call) -> AsyncIterator[bytes]:
        """The tier's messages for one serialized qarr.v1.GenerateRequest; raises RouteError."""
        started = time.perf_counter()
        rq = None
        status = "CANCELLED"  # unless an outcome is reached: the caller went away (or its deadline passed)
        error: RouteError | None = None
        last = b""
        refused, counted_as = self._admit(call.caller)
        try:
            if refused is not None:
                raise refused
            request = parse_request(raw, self.config.limits)
            request_id = request.request_id
            if not request_id:
                request_id = uuid.uuid4().hex
                raw += pb.GenerateRequest(request_id=request_id).SerializeToString()
            rq = self.telemetry.request_started(request_id, request, started, call.metadata)
            rq.caller = call.caller
            self.budget.on_request()
            candidates, predictor = await self._choose(request)
            key = affinity_key(request.prompt, ((m.role, m.content) for m in request.messages), self.config.picker.affinity_prefix_bytes)
            self.requests += 1
            up = await open_upstream(
                raw, candidates, self.pool.tiers, self.budget, self.config.retry, call.time_remaining, rq.routed,
                key, self.requests,
            )
            backend, candidate = up.backend, up.candidate
            rq.replica, rq.pick = backend.address, up.pick
            call.tier, call.routing_reason, call.attempts, call.replica = backend.name, candidate.reason, up.attempts, backend.address
            trailer = self._trailer(backend.name, candidate.reason, up.attempts, predictor, backend.address)
            relay = Relay(backend, up.call, up.first)
            code = None
            self._relaying.add(relay)
            try:
                if relay.last[0] == LAST_MESSAGE_TAG:
                    yield relay.last + trailer
                else:
                    rq.first_token()
                    yield relay.last
                    async for chunk in up.chunks:
                        if chunk and chunk[0] == LAST_MESSAGE_TAG:
                            chunk += trailer
                        relay.last = chunk
                        yield chunk
                code = grpc.StatusCode.OK
                status = "OK"
            except asyncio.CancelledError:
                # Reading a tier stream that cut_streams() or cut_stalled() cancelled raises CancelledError in
                # this task, which is not itself being cancelled (its caller is still there): end it as a cut.
                if not (relay.cut and up.call.cancelled() and not _being_cancelled()):
                    raise
                delivered = pb.GenerateResponse.FromString(relay.last).generated_tokens
                yield self._error_message(delivered, candidate, backend.name, up.attempts, predictor, backend.address)
                if relay.cut == CUT_DRAIN:
                    code = grpc.StatusCode.CANCELLED  # not the tier's fault
                    raise StreamInterrupted(
                        f"the router is shutting down; the stream was cut after {delivered} tokens", "UNAVAILABLE",
                        delivered, "ROUTER_SHUTTING_DOWN", tier=backend.name,
                    ) from None
                code = grpc.StatusCode.UNAVAILABLE  # counts against the tier
                raise StreamInterrupted(
                    f"tier {backend.name} stopped answering; the stream was cut after {delivered} tokens",
                    "UNAVAILABLE", delivered, "TIER_UNRESPONSIVE", tier=backend.name,
                ) from None
            except grpc.aio.AioRpcError as e:
                code = e.code()
                # Text already reached the caller: no retry. Say how much was delivered.
                delivered = pb.GenerateResponse.FromString(relay.last).generated_tokens
                yield self._error_message(delivered, candidate, backend.name, up.attempts, predictor, backend.address)
                raise StreamInterrupted(
                    f"tier {backend.name} failed after {delivered} tokens: {(e.details() or code.name)[:256]}",
                    code.name, delivered, tier=backend.name,
                ) from None
            finally:
                self._relaying.discard(relay)
                last = relay.last
                up.call.cancel()
                up.settle(code)
                if code is grpc.StatusCode.OK:
                    self._feedback(up, last)
        except RouteError as e:
            status, error = e.code, e
            raise
        finally:
            if refused is None:
                self._release(counted_as)
            if status == "CANCELLED":
                remaining = call.time_remaining()
                if remaining is not None and remaining <= 0:
                    status = "DEADLINE_EXCEEDED"
            if rq is None:
                rq = self.telemetry.request_started("", None, started, call.metadata)
                rq.caller = call.caller
            rq.finished(status, last, error)

    def _feedback(self, up, last: bytes) -> None:
        """A stream ended OK: the replica's load from its last message, and its live latency."""
        ended = time.perf_counter()
        backend = up.backend
        final = tier_service_pb2.TierServiceGenerateResponse.FromString(last)
        backend.load = final.load
        backend.served += 1
        first_tokens = final.generated_tokens if up.first is last else pb.GenerateResponse.FromString(up.first).generated_tokens
        backend.stats.record(self.pool.clock(), up.first_at - up.began, final.generated_tokens - first_tokens, ended - up.first_at)

    def _admit(self, caller: str) -> tuple[Overloaded | None, str | None]:
        """Admission: the router's stream limit, then the caller's (when one is set and the door named a
        caller). Returns the refusal, or None and the caller counted against its limit (None: not counted)."""
        config = self.config
        if self.in_flight >= config.max_in_flight:
            return Overloaded(f"router is at its limit of {config.max_in_flight} concurrent streams; retry later"), None
        limit = config.max_in_flight_per_caller
        counted_as = None
        if caller and limit is not None:
            held = self.in_flight_by_caller.get(caller, 0)
            if held >= limit:
                return CallerBusy(f"caller {caller} already has {limit} streams open, its limit; retry when one ends"), None
            self.in_flight_by_caller[caller] = held + 1
            counted_as = caller
        self.in_flight += 1
        if self.in_flight > self._peak_in_flight:
            self._peak_in_flight = self.in_flight
        return None, counted_as

    def _release(self, counted_as: str | None) -> None:
        self.in_flight -= 1
        if counted_as is not None:
            left = self.in_flight_by_caller[counted_as] - 1
            if left:
                self.in_flight_by_caller[counted_as] = left
            else:
                del self.in_flight_by_caller[counted_as]

    async def _choose(self, request: pb.GenerateRequest) -> tuple[list[Candidate], str]:
        """Candidates, and the id of the accuracy predictor that ranked them ("" when none did)."""
        view, predictor = await self._view(request)
        live = {name: t.live() for name, t in self.pool.tiers.items()}
        return choose_tier(view, self.config.tiers, self.profiles.tiers, live, self.config.policy), predictor

    async def _view(self, request: pb.GenerateRequest) -> tuple[RequestView, str]:
        """The request as choose_tier sees it, and the id of the accuracy predictor that estimated its accuracy
        per tier ("" when none). Tokenizes (off the event loop) only for tiers the byte bound cannot clear."""
        sampling = request.sampling
        max_tokens = sampling.max_tokens if sampling.HasField("max_tokens") else None
        contents = [m.content for m in request.messages]
        bound = upper_bound(request.prompt, contents)
        needed = max_tokens if max_tokens is not None else 1
        prompt_tokens: dict[str, int] = {}
        counted: dict[str, int | None] = {}
        for tier in self.config.tiers:
            if bound + needed <= tier.max_model_len:
                continue  # fits for sure: nothing to count
            path = tier.tokenizer_path()
            if path not in counted:
                counted[path] = await asyncio.to_thread(self.tokens.count, path, request.prompt, contents)
            if counted[path] is not None:
                prompt_tokens[tier.name] = counted[path]
        routing = request.routing
        min_accuracy = routing.min_accuracy if routing.HasField("min_accuracy") else None
        text = request.prompt or (contents[-1] if contents else "")
        temperature = sampling.temperature if sampling.HasField("temperature") else None
        expected = max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS
        predictor = self.profiles.accuracy_predictor
        accuracy = predictor.predict(text) if predictor is not None and not routing.tier else None
        view = RequestView(
            max_tokens=max_tokens,
            prompt_tokens=prompt_tokens,
            prompt_bytes=bound,
            pinned=routing.tier,
            latency_budget_ms=routing.latency_budget_ms,
            min_accuracy=min_accuracy,
            complexity=classify(Signals(text, bound, expected, temperature)),
            accuracy=accuracy,
        )
        return view, (predictor.id if accuracy is not None else "")

    def _trailer(self, tier: str, reason: str, attempts: int, predictor: str, replica: str) -> bytes:
        key = (tier, reason, attempts, predictor, replica)
        trailer = self._trailers.get(key)
        if trailer is None:
            if len(self._trailers) >= 4096:  # replicas found by DNS come and go
                self._trailers.clear()
            trailer = pb.GenerateResponse(
                tier=tier, routing_reason=reason, attempts=attempts, predictor=predictor, replica=replica
            ).SerializeToString()
            self._trailers[key] = trailer
        return trailer

    @staticmethod
    def _error_message(delivered: int, candidate: Candidate, tier: str, attempts: int, predictor: str, replica: str) -> bytes:
        return pb.GenerateResponse(
            finish_reason=common_pb2.FINISH_REASON_ERROR,
            usage=common_pb2.Usage(completion_tokens=delivered),
            generated_tokens=delivered,
            tier=tier,
            routing_reason=candidate.reason,
            attempts=attempts,
            predictor=predictor,
            replica=replica,
        ).SerializeToString()
