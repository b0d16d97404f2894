"""qarr.v1.RouterService over gRPC: a thin adapter over the router core (router/core.py).

Generate takes and returns bytes (the generated add_..._to_server would decode
and re-encode every message). RouteErrors become gRPC statuses here, in one
table; the core has already counted and logged the request.
"""

from __future__ import annotations

import grpc

from mesh.status import abort
from qarr.v1 import router_service_pb2 as pb
from router.auth import current_caller
from router.breaker import State
from router.core import Call, LiveLatency, Router
from router.errors import Overloaded, RouteError

# Domain error -> gRPC status: each error's canonical code is a gRPC status name (google.rpc.Code).
# How the caller should retry rides along: RetryInfo for admission refusals the router did not retry,
# a negative grpc-retry-pushback-ms for what the router already retried (router/errors.py).
HEALTH = {None: pb.HEALTH_STATE_UNKNOWN, True: pb.HEALTH_STATE_SERVING, False: pb.HEALTH_STATE_NOT_SERVING}
BREAKER = {State.CLOSED: pb.BREAKER_STATE_CLOSED, State.OPEN: pb.BREAKER_STATE_OPEN, State.HALF_OPEN: pb.BREAKER_STATE_HALF_OPEN}


def grpc_status(error: RouteError) -> grpc.StatusCode:
    return grpc.StatusCode[error.code]


async def abort_with(context: grpc.aio.ServicerContext, error: RouteError) -> None:
    retry_after = error.retry_after_s if isinstance(error, Overloaded) else None
    await abort(
        context, grpc_status(error), error.message, error.reason,
        retry_after_s=retry_after, retry=not error.retried, **error.info,
    )


class RouterService:
    def __init__(self, router: Router) -> None:
        self.router = router

    async def Generate(self, raw: bytes, context: grpc.aio.ServicerContext):
        stream = self.router.route(raw, Call(context.time_remaining, context.invocation_metadata, current_caller()))
        try:
            async for chunk in stream:
                yield chunk
        except RouteError as e:
            await abort_with(context, e)
        finally:
            await stream.aclose()

    async def ListTiers(self, request: pb.ListTiersRequest, context) -> pb.ListTiersResponse:
        tiers = []
        for t in self.router.tiers():
            p = t.profile
            profile = None
            if p is not None:
                profile = pb.TierProfile(
                    ttft_ms=p.ttft_ms_p50, decode_tokens_per_second=p.decode_tps_c1, accuracy=p.accuracy,
                    cost_per_million_tokens=p.cost_per_million_tokens, routable=p.routable,
                    not_routable_reason=p.not_routable_reason,
                )
            replicas = [
                pb.ReplicaInfo(
                    address=r.address, health=HEALTH[r.serving], breaker=BREAKER[r.breaker], in_flight=r.in_flight,
                    load=r.load, live=live_latency(r.live), served=r.served,
                )
                for r in t.replicas
            ]
            tiers.append(
                pb.TierInfo(
                    name=t.name, model=t.model, quantization=t.quantization, address=t.address,
                    max_model_len=t.max_model_len, health=HEALTH[t.serving], in_flight=t.in_flight,
                    breaker=BREAKER[t.breaker], load=t.load, profile=profile, replicas=replicas, live=live_latency(t.live),
                )
            )
        return pb.ListTiersResponse(tiers=tiers, predictor=self.router.predictor())


def live_latency(live: LiveLatency) -> pb.LiveLatency:
    return pb.LiveLatency(ttft_ms=live.ttft_ms, decode_tokens_per_second=live.decode_tps, samples=live.samples)


def handlers(service: RouterService) -> grpc.GenericRpcHandler:
    return grpc.method_handlers_generic_handler(
        "qarr.v1.RouterService",
        {
            "Generate": grpc.unary_stream_rpc_method_handler(service.Generate),
            "ListTiers": grpc.unary_unary_rpc_method_handler(
                service.ListTiers,
                request_deserializer=pb.ListTiersRequest.FromString,
                response_serializer=pb.ListTiersResponse.SerializeToString,
            ),
        },
    )
