"""TierService over an `Engine`: validate, stream deltas, translate errors in one place."""

from __future__ import annotations

import uuid

import grpc

from mesh.status import abort
from qarr.v1 import common_pb2, tier_service_pb2, tier_service_pb2_grpc
from tier_server.engine import Engine, EngineDead, EngineError, Finish, RequestRejected
from tier_server.metrics import TierTelemetry
from tier_server.validation import prompt_of, sampling_of

FINISH = {
    Finish.STOP: common_pb2.FINISH_REASON_STOP,
    Finish.LENGTH: common_pb2.FINISH_REASON_LENGTH,
    Finish.ABORT: common_pb2.FINISH_REASON_CANCELLED,
}
Response = tier_service_pb2.TierServiceGenerateResponse


class TierServicer(tier_service_pb2_grpc.TierServiceServicer):
    def __init__(self, engine: Engine, tier: str, quantization: str, telemetry: TierTelemetry | None = None) -> None:
        self.engine = engine
        self.tier = tier
        self.quantization = quantization
        self.telemetry = telemetry if telemetry is not None else TierTelemetry(tier, engine)

    async def Generate(self, request, context: grpc.aio.ServicerContext):
        engine = self.engine
        rq = self.telemetry.request_started(request, context)
        last = None
        try:
            if engine.dead:
                await abort(context, grpc.StatusCode.UNAVAILABLE, f"tier {self.tier}: engine is not running", "ENGINE_DEAD")
            try:
                prompt = prompt_of(request.prompt, request.messages)
                token_ids = await engine.tokenize(prompt)
                sampling = sampling_of(request.sampling, len(token_ids), engine.info.max_model_len)
                async for delta in engine.generate(token_ids, sampling, request.request_id or uuid.uuid4().hex):
                    # Empty deltas (the detokenizer holding back a partial
                    # character) are not worth a message.
                    if delta.text:
                        if rq.ttft is None:
                            rq.first_token()
                        yield Response(text=delta.text, generated_tokens=delta.completion_tokens)
                    if delta.finish is not None:
                        last = self._last(delta)
                        yield last
            except RequestRejected as e:
                await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(e), "INVALID_REQUEST")
            except EngineDead as e:
                await abort(context, grpc.StatusCode.UNAVAILABLE, f"tier {self.tier}: {e}", "ENGINE_DEAD")
            except EngineError as e:
                await abort(context, grpc.StatusCode.INTERNAL, f"tier {self.tier}: {e}", "ENGINE_ERROR")
        finally:
            rq.finished(context, last)

    def _last(self, delta) -> Response:
        """The closing message: no text (the router recognises it by its first field)."""
        load = self.engine.load()
        return Response(
            generated_tokens=delta.completion_tokens,
            finish_reason=FINISH[delta.finish],
            usage=common_pb2.Usage(prompt_tokens=delta.prompt_tokens, completion_tokens=delta.completion_tokens),
            tier=self.tier,
            model=self.engine.info.model,
            quantization=self.quantization,
            load=common_pb2.Load(
                running_requests=load.running, waiting_requests=load.waiting, kv_cache_usage=load.kv_cache_usage
            ),
        )

    async def GetLoad(self, request, context):
        load = self.engine.load()
        return tier_service_pb2.GetLoadResponse(
            tier=self.tier,
            load=common_pb2.Load(
                running_requests=load.running, waiting_requests=load.waiting, kv_cache_usage=load.kv_cache_usage
            ),
        )
