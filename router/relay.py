"""RouterService: admit, choose a tier, open its stream (with retries), relay its chunks as bytes.

The hot path does no per-chunk parsing: a tier's last message is the only one
whose encoding starts with field 2 (finish_reason), so one byte tells it apart,
and the router appends its own fields to it (protobuf merges concatenated
messages; the later value of a field wins). Per request, the router parses the
request once and the last message once (for the tier's load and the log line).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import grpc
from google.protobuf.message import DecodeError

from mesh.status import abort, reason_of
from qarr.v1 import common_pb2, router_service_pb2 as pb, tier_service_pb2
from router.backends import BackendPool
from router.breaker import State
from router.choose import Candidate, NoTier, RequestView, choose_tier
from router.classify import Signals, classify
from mesh.config import MeshConfig
from router.profiles import Profiles
from router.retry_budget import RetryBudget
from router.telemetry import RouterRequest, RouterTelemetry, prices_from
from router.tokens import TokenCounter, upper_bound
from router.upstream import Upstream, open_upstream

log = logging.getLogger("qarr.router")

LAST_MESSAGE_TAG = 0x10  # field 2, varint: finish_reason
DEFAULT_MAX_TOKENS = 256  # the tier's default when the caller sets none (common.proto)
HEALTH = {None: pb.HEALTH_STATE_UNKNOWN, True: pb.HEALTH_STATE_SERVING, False: pb.HEALTH_STATE_NOT_SERVING}
BREAKER = {State.CLOSED: pb.BREAKER_STATE_CLOSED, State.OPEN: pb.BREAKER_STATE_OPEN, State.HALF_OPEN: pb.BREAKER_STATE_HALF_OPEN}


class RouterServicer:
    def __init__(self, pool: BackendPool, config: MeshConfig, profiles: Profiles, telemetry: RouterTelemetry | None = None) -> None:
        self.pool = pool
        self.telemetry = telemetry if telemetry is not None else RouterTelemetry()
        self.config = config
        self.profiles = profiles
        self.budget = RetryBudget(config.retry.budget_ratio, config.retry.budget_burst)
        self.tokens = TokenCounter()
        self.in_flight = 0
        self._trailers: dict[tuple[str, str, int], bytes] = {}

    async def apply(self, config: MeshConfig, profiles: Profiles) -> None:
        """Switch to a new config and profiles (hot reload); streams in flight keep their tier."""
        gone = self.pool.swap(config)  # no await between the swap and the new config: choices stay consistent
        self.config, self.profiles = config, profiles
        self.telemetry.prices = prices_from(config.tiers, profiles)
        self.budget.configure(config.retry.budget_ratio, config.retry.budget_burst)
        self._trailers = {}  # they name the predictor in force
        await self.pool.retire(gone)

    def _trailer(self, tier: str, reason: str, attempts: int, predictor: str) -> bytes:
        key = (tier, reason, attempts, predictor)
        trailer = self._trailers.get(key)
        if trailer is None:
            trailer = pb.GenerateResponse(
                tier=tier, routing_reason=reason, attempts=attempts, predictor=predictor
            ).SerializeToString()
            self._trailers[key] = trailer
        return trailer

    async def Generate(self, raw: bytes, context: grpc.aio.ServicerContext):
        if self.in_flight >= self.config.max_in_flight:
            self.telemetry.rejected("RESOURCE_EXHAUSTED", "ROUTER_FULL")
            await abort(
                context, grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"router is at its limit of {self.config.max_in_flight} concurrent streams; retry later", "ROUTER_FULL",
            )
        self.in_flight += 1
        try:
            started = time.perf_counter()
            request = await self._parse(raw, context)
            self.budget.on_request()
            candidates, predictor = await self._choose(request, context)
            request_id = request.request_id
            if not request_id:
                request_id = uuid.uuid4().hex
                raw += pb.GenerateRequest(request_id=request_id).SerializeToString()
            rq = self.telemetry.request_started(request_id, request, started, context)
            up = await self._open(raw, candidates, rq, context)

            backend, candidate = up.backend, up.candidate
            trailer = self._trailer(backend.name, candidate.reason, up.attempts, predictor)
            last = up.first
            if last[0] != LAST_MESSAGE_TAG:
                rq.first_token()
            code = None
            try:
                yield last + trailer if last[0] == LAST_MESSAGE_TAG else last
                async for chunk in up.chunks:
                    if chunk and chunk[0] == LAST_MESSAGE_TAG:
                        chunk += trailer
                    yield chunk
                    last = chunk
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as e:
                code = e.code()
                # Text already reached the caller: no retry. Say how much was delivered.
                delivered = pb.GenerateResponse.FromString(last).generated_tokens
                yield self._error_message(delivered, candidate, backend.name, up.attempts, predictor)
                reason = reason_of(e.trailing_metadata()) or "UPSTREAM_ERROR"
                await abort(context, code, f"tier {backend.name}: {e.details()}", reason, tier=backend.name)
            finally:
                up.call.cancel()
                up.settle(code)
                if code is grpc.StatusCode.OK:
                    backend.load = tier_service_pb2.TierServiceGenerateResponse.FromString(last).load
                rq.finished(code.name if code else "CANCELLED", last)
        finally:
            self.in_flight -= 1

    async def _parse(self, raw: bytes, context) -> pb.GenerateRequest:
        try:
            request = pb.GenerateRequest.FromString(raw)
        except DecodeError:
            self.telemetry.rejected("INVALID_ARGUMENT", "BAD_REQUEST")
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "request is not a valid qarr.v1.GenerateRequest", "BAD_REQUEST")
        if bool(request.prompt) == bool(request.messages):
            self.telemetry.rejected("INVALID_ARGUMENT", "INVALID_REQUEST")
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "set exactly one of prompt and messages", "INVALID_REQUEST")
        return request

    async def _choose(self, request: pb.GenerateRequest, context) -> tuple[list[Candidate], str]:
        """Candidates, and the id of the accuracy predictor that ranked them ("" when none did)."""
        try:
            view, predictor = await self._view(request)
            live = {name: b.live() for name, b in self.pool.backends.items()}
            candidates = choose_tier(view, self.config.tiers, self.profiles.tiers, live, self.config.policy)
            return candidates, predictor
        except NoTier as e:
            self.telemetry.rejected(e.code, e.reason)
            await abort(context, grpc.StatusCode[e.code], str(e), e.reason)

    async def _open(self, raw: bytes, candidates: list[Candidate], rq: RouterRequest, context) -> Upstream:
        try:
            return await open_upstream(
                raw, candidates, self.pool.backends, self.budget, self.config.retry, context.time_remaining, rq.routed
            )
        except NoTier as e:
            rq.finished(e.code)
            await abort(context, grpc.StatusCode[e.code], str(e), e.reason)
        except grpc.aio.AioRpcError as e:
            rq.finished(e.code().name)
            await abort(context, e.code(), e.details() or "tier failed", reason_of(e.trailing_metadata()) or "UPSTREAM_ERROR")

    async def _view(self, request: pb.GenerateRequest) -> tuple[RequestView, str]:
        """The request as choose_tier sees it, and the id of the accuracy predictor that estimated it
        ("" when none). Tokenizes only for tiers the byte bound cannot clear."""
        sampling = request.sampling
        max_tokens = sampling.max_tokens if sampling.HasField("max_tokens") else DEFAULT_MAX_TOKENS
        contents = [m.content for m in request.messages]
        bound = upper_bound(request.prompt, contents)
        prompt_tokens = {}
        counted: dict[str, int | None] = {}
        for tier in self.config.tiers:
            if bound + max_tokens > tier.max_model_len:
                path = tier.tokenizer_path()
                if path not in counted:
                    counted[path] = await asyncio.to_thread(self.tokens.count, path, request.prompt, contents)
                prompt_tokens[tier.name] = counted[path] if counted[path] is not None else bound
            else:
                prompt_tokens[tier.name] = bound
        routing = request.routing
        min_accuracy = routing.min_accuracy if routing.HasField("min_accuracy") else None
        text = request.prompt or (contents[-1] if contents else "")
        temperature = sampling.temperature if sampling.HasField("temperature") else None
        predictor = self.profiles.accuracy_predictor
        accuracy = predictor.predict(text) if predictor is not None and not routing.tier else None
        view = RequestView(
            max_tokens=max_tokens,
            prompt_tokens=prompt_tokens,
            pinned=routing.tier,
            latency_budget_ms=routing.latency_budget_ms,
            min_accuracy=min_accuracy,
            complexity=classify(Signals(text, bound, max_tokens, temperature)),
            accuracy=accuracy,
        )
        return view, (predictor.id if accuracy is not None else "")

    @staticmethod
    def _error_message(delivered: int, candidate: Candidate, tier: str, attempts: int, predictor: str) -> bytes:
        return pb.GenerateResponse(
            finish_reason=common_pb2.FINISH_REASON_ERROR,
            usage=common_pb2.Usage(completion_tokens=delivered),
            generated_tokens=delivered,
            tier=tier,
            routing_reason=candidate.reason,
            attempts=attempts,
            predictor=predictor,
        ).SerializeToString()

    async def ListTiers(self, request, context):
        tiers = []
        for b in self.pool.backends.values():
            s = b.spec
            p = self.profiles.tiers.get(s.name)
            profile = None
            if p is not None:
                profile = pb.TierProfile(
                    ttft_ms=p.ttft_ms_p50, decode_tokens_per_second=p.decode_tps_c1, accuracy=p.accuracy,
                    cost_per_million_tokens=p.cost_per_million_tokens, routable=p.routable,
                    not_routable_reason=p.not_routable_reason,
                )
            tiers.append(
                pb.TierInfo(
                    name=s.name, model=s.model, quantization=s.quantization, address=s.address,
                    max_model_len=s.max_model_len, health=HEALTH[b.serving], in_flight=b.in_flight,
                    breaker=BREAKER[b.breaker.state], load=b.load, profile=profile,
                )
            )
        predictor = self.profiles.accuracy_predictor
        return pb.ListTiersResponse(tiers=tiers, predictor=predictor.id if predictor is not None else "")


def handlers(servicer: RouterServicer) -> grpc.GenericRpcHandler:
    """RouterService with Generate taking and returning bytes (the generated
    add_..._to_server would decode and re-encode every message)."""
    return grpc.method_handlers_generic_handler(
        "qarr.v1.RouterService",
        {
            "Generate": grpc.unary_stream_rpc_method_handler(servicer.Generate),
            "ListTiers": grpc.unary_unary_rpc_method_handler(
                servicer.ListTiers,
                request_deserializer=pb.ListTiersRequest.FromString,
                response_serializer=pb.ListTiersResponse.SerializeToString,
            ),
        },
    )
