"""RouterService: parse the request once, choose a tier, relay its chunks as bytes.

The hot path does no per-chunk parsing: a tier's last message is the only one
whose encoding starts with field 2 (finish_reason), so one byte tells it apart,
and the router appends its own fields to it (protobuf merges concatenated
messages; the later value of a field wins).
"""

from __future__ import annotations

import logging
import time
import uuid

import grpc
from google.protobuf.message import DecodeError

from mesh.status import abort, reason_of
from qarr.v1 import common_pb2, router_service_pb2 as pb
from router.backends import BackendPool
from router.choose import NoTier, TierView, choose_tier
from router.telemetry import RouterTelemetry

log = logging.getLogger("qarr.router")

LAST_MESSAGE_TAG = 0x10  # field 2, varint: finish_reason
HEALTH = {None: pb.HEALTH_STATE_UNKNOWN, True: pb.HEALTH_STATE_SERVING, False: pb.HEALTH_STATE_NOT_SERVING}


class RouterServicer:
    def __init__(self, pool: BackendPool, telemetry: RouterTelemetry | None = None) -> None:
        self.pool = pool
        self.telemetry = telemetry if telemetry is not None else RouterTelemetry()
        self._trailers: dict[tuple[str, str, int], bytes] = {}

    def _trailer(self, tier: str, reason: str, attempts: int) -> bytes:
        key = (tier, reason, attempts)
        trailer = self._trailers.get(key)
        if trailer is None:
            trailer = pb.GenerateResponse(tier=tier, routing_reason=reason, attempts=attempts).SerializeToString()
            self._trailers[key] = trailer
        return trailer

    async def Generate(self, raw: bytes, context: grpc.aio.ServicerContext):
        started = time.perf_counter()
        try:
            request = pb.GenerateRequest.FromString(raw)
        except DecodeError:
            self.telemetry.rejected("INVALID_ARGUMENT", "BAD_REQUEST")
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "request is not a valid qarr.v1.GenerateRequest", "BAD_REQUEST")
        if bool(request.prompt) == bool(request.messages):
            self.telemetry.rejected("INVALID_ARGUMENT", "INVALID_REQUEST")
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, "set exactly one of prompt and messages", "INVALID_REQUEST")
        backends = self.pool.backends
        try:
            candidates = choose_tier(request.routing.tier, [TierView(b.name, b.serving) for b in backends.values()])
        except NoTier as e:
            code = grpc.StatusCode.INVALID_ARGUMENT if e.invalid_argument else grpc.StatusCode.UNAVAILABLE
            self.telemetry.rejected(code.name, e.reason)
            await abort(context, code, str(e), e.reason)

        request_id = request.request_id
        if not request_id:
            request_id = uuid.uuid4().hex
            raw += pb.GenerateRequest(request_id=request_id).SerializeToString()
        candidate = candidates[0]
        backend = backends[candidate.name]
        rq = self.telemetry.request_started(request_id, request, started, context)
        call = backend.generate(raw, timeout=context.time_remaining(), metadata=rq.routed(backend.name, candidate.reason))
        backend.in_flight += 1
        last = b""
        ttft = None
        outcome = "OK"
        try:
            async for chunk in call:
                if chunk and chunk[0] == LAST_MESSAGE_TAG:
                    yield chunk + self._trailer(backend.name, candidate.reason, 1)
                    last = chunk
                else:
                    if ttft is None:
                        ttft = rq.first_token()
                    yield chunk
                    last = chunk
        except grpc.aio.AioRpcError as e:
            outcome = e.code().name
            if last:
                # Text already reached the caller: no retry. Say how much was delivered.
                delivered = pb.GenerateResponse.FromString(last).generated_tokens
                yield pb.GenerateResponse(
                    finish_reason=common_pb2.FINISH_REASON_ERROR,
                    usage=common_pb2.Usage(completion_tokens=delivered),
                    generated_tokens=delivered,
                    tier=backend.name,
                    routing_reason=candidate.reason,
                    attempts=1,
                ).SerializeToString()
            await abort(context, e.code(), f"tier {backend.name}: {e.details()}", reason_of(e.trailing_metadata()) or "UPSTREAM_ERROR", tier=backend.name)
        finally:
            call.cancel()
            backend.in_flight -= 1
            if outcome == "OK" and last and last[0] != LAST_MESSAGE_TAG:
                outcome = "CANCELLED"
            rq.finished(outcome, last)

    async def ListTiers(self, request, context):
        tiers = []
        for b in self.pool.backends.values():
            s = b.spec
            tiers.append(
                pb.TierInfo(
                    name=s.name, model=s.model, quantization=s.quantization, address=s.address,
                    max_model_len=s.max_model_len, health=HEALTH[b.serving], in_flight=b.in_flight,
                )
            )
        return pb.ListTiersResponse(tiers=tiers)


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
