"""TierService over an `Engine`: check, tokenize, stream deltas; errors translated in one table.

Generate takes the request's raw bytes and parses them itself, so bytes that are
no TierServiceGenerateRequest get INVALID_ARGUMENT like any other bad input.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace

import grpc
from google.protobuf.message import DecodeError

from mesh.status import abort
from qarr.v1 import common_pb2, tier_service_pb2
from tier_server.engine import Engine, EngineBusy, EngineDead, EngineError, Finish, RequestRejected
from tier_server.limits import Limits
from tier_server.metrics import TierTelemetry
from tier_server.prompting import PromptFormat
from tier_server.validation import check_request, fit_context, parse

log = logging.getLogger("qarr.tier")

SERVICE = tier_service_pb2.DESCRIPTOR.services_by_name["TierService"].full_name
FINISH = {
    Finish.STOP: common_pb2.FINISH_REASON_STOP,
    Finish.LENGTH: common_pb2.FINISH_REASON_LENGTH,
    Finish.ABORT: common_pb2.FINISH_REASON_CANCELLED,
    Finish.ERROR: common_pb2.FINISH_REASON_ERROR,
}
Response = tier_service_pb2.TierServiceGenerateResponse
Code = grpc.StatusCode


def error_status(e: Exception, tier: str) -> tuple[Code, str, str]:
    """The one table from an exception to (status code, ErrorInfo reason, message shown to the caller).

    Messages of our own errors are ours to show; anything else is a bug whose text
    (paths, internals) stays in the tier's log."""
    if isinstance(e, RequestRejected):
        return Code.INVALID_ARGUMENT, "INVALID_REQUEST", str(e)
    if isinstance(e, EngineBusy):
        return Code.RESOURCE_EXHAUSTED, "ENGINE_BUSY", f"tier {tier}: {e}"
    if isinstance(e, EngineDead):
        return Code.UNAVAILABLE, "ENGINE_DEAD", f"tier {tier}: {e}"
    if isinstance(e, EngineError):
        return Code.INTERNAL, "ENGINE_ERROR", f"tier {tier}: {e}"
    return Code.INTERNAL, "INTERNAL", f"tier {tier}: internal error (the tier's log has the details)"


class TierServicer:
    def __init__(
        self, engine: Engine, tier: str, quantization: str, telemetry: TierTelemetry | None = None, *,
        limits: Limits | None = None, prompt_format: PromptFormat | None = None,
    ) -> None:
        self.engine = engine
        self.tier = tier
        self.quantization = quantization
        self.telemetry = telemetry if telemetry is not None else TierTelemetry(tier, engine)
        self.limits = limits if limits is not None else Limits.for_tier(engine.info.max_model_len)
        self.prompt_format = prompt_format if prompt_format is not None else PromptFormat()

    async def Generate(self, raw: bytes, context: grpc.aio.ServicerContext):
        rq = self.telemetry.request_started(context)
        last = None
        try:
            try:
                async for message in self._generate(raw, rq):
                    if message.finish_reason:
                        last = message
                    yield message
            except Exception as e:  # CancelledError and GeneratorExit (caller gone) pass through
                code, reason, message = error_status(e, self.tier)
                if code is Code.INTERNAL:
                    log.error("tier %s: request %s failed: %s", self.tier, rq.request_id or "-", reason, exc_info=e)
                await abort(context, code, message, reason)
        finally:
            rq.finished(context, last)

    async def _generate(self, raw: bytes, rq):
        engine = self.engine
        if engine.dead:
            raise EngineDead("engine is not running")
        request = check_request(parse(raw), self.limits, len(raw))
        rq.identify(request.request_id)
        info = engine.info
        token_ids = await engine.tokenize(self.prompt_format.render(request.prompt, info.chat_template))
        sampling = fit_context(request.sampling, len(token_ids), info.max_model_len)
        sampling = replace(sampling, stop=self.prompt_format.stops(sampling.stop))
        async for delta in engine.generate(token_ids, sampling, request.request_id or uuid.uuid4().hex):
            # Empty deltas (the detokenizer holding back a partial character) are not worth a message.
            if delta.text:
                if rq.ttft is None:
                    rq.first_token()
                yield Response(text=delta.text, generated_tokens=delta.completion_tokens)
            if delta.finish is not None:
                yield self._last(delta)

    def _last(self, delta) -> Response:
        """The closing message: no text, a non-zero finish_reason (the router knows it by its first byte)."""
        load = self.engine.load()
        return Response(
            generated_tokens=delta.completion_tokens,
            finish_reason=FINISH.get(delta.finish, common_pb2.FINISH_REASON_ERROR),
            usage=common_pb2.Usage(prompt_tokens=delta.prompt_tokens, completion_tokens=delta.completion_tokens),
            tier=self.tier,
            model=self.engine.info.model,
            quantization=self.quantization,
            load=common_pb2.Load(
                running_requests=load.running, waiting_requests=load.waiting, kv_cache_usage=load.kv_cache_usage
            ),
        )

    async def GetLoad(self, raw: bytes, context):
        try:
            tier_service_pb2.GetLoadRequest.FromString(raw)
        except DecodeError:
            await abort(context, Code.INVALID_ARGUMENT, "request is not a valid qarr.v1.GetLoadRequest", "INVALID_REQUEST")
        load = self.engine.load()
        return tier_service_pb2.GetLoadResponse(
            tier=self.tier,
            load=common_pb2.Load(
                running_requests=load.running, waiting_requests=load.waiting, kv_cache_usage=load.kv_cache_usage
            ),
        )


def add_to_server(servicer: TierServicer, server: grpc.aio.Server) -> None:
    """Register TierService with raw request bytes (the servicer parses them) and encoded responses."""
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Generate": grpc.unary_stream_rpc_method_handler(servicer.Generate, response_serializer=Response.SerializeToString),
        "GetLoad": grpc.unary_unary_rpc_method_handler(
            servicer.GetLoad, response_serializer=tier_service_pb2.GetLoadResponse.SerializeToString
        ),
    }),))
