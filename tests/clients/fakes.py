"""Test doubles for the SDK tests: a request-recording engine and a scripted router."""

from __future__ import annotations

import asyncio

import grpc

from mesh.status import abort
from qarr.v1 import router_service_pb2 as pb
from tier_server.engine import EngineDead
from tier_server.fake_engine import FakeEngine


class RecordingEngine(FakeEngine):
    """FakeEngine that records every request id it is asked to generate, and can
    refuse (UNAVAILABLE at the tier) before or after some text."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[str] = []
        self.max_tokens: dict[str, int] = {}  # request id -> sampling.max_tokens, to tell runs apart
        self.unavailable_next = 0  # refuse this many requests before any text
        self.unavailable_after_tokens: int | None = None  # then break streams after this many tokens
        self.in_flight = 0
        self.peak_in_flight = 0
        self.hold_after: int | None = None  # requests past this many wait (until cancelled) before any text
        self.held_cancelled = 0  # held requests whose call was cancelled

    async def generate(self, prompt_token_ids, sampling, request_id):
        if request_id.startswith("warmup-"):
            async for delta in super().generate(prompt_token_ids, sampling, request_id):
                yield delta
            return
        self.requests.append(request_id)
        self.max_tokens[request_id] = sampling.max_tokens
        if self.unavailable_next > 0:
            self.unavailable_next -= 1
            raise EngineDead("injected: refused before the first token")
        if self.hold_after is not None and len(self.requests) > self.hold_after:
            try:
                await asyncio.Event().wait()  # held: only the caller's cancel ends it
            except asyncio.CancelledError:
                self.held_cancelled += 1
                raise
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            n = 0
            async for delta in super().generate(prompt_token_ids, sampling, request_id):
                if self.unavailable_after_tokens is not None and n >= self.unavailable_after_tokens:
                    raise EngineDead("injected: broke after text")
                n += 1
                yield delta
        finally:
            self.in_flight -= 1


class ScriptedRouter:
    """A RouterService whose Generate ends with the status named by the prompt
    (e.g. prompt "RESOURCE_EXHAUSTED"), with an ErrorInfo reason; counts calls per prompt.
    "CODE retried" adds a negative retry pushback (the router already retried); "CODE after=S"
    a RetryInfo / pushback of S seconds."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    async def Generate(self, request: pb.GenerateRequest, context: grpc.aio.ServicerContext):
        self.calls[request.prompt] = self.calls.get(request.prompt, 0) + 1
        name, *options = request.prompt.split()
        code = grpc.StatusCode[name]
        after = next((float(o.removeprefix("after=")) for o in options if o.startswith("after=")), None)
        await abort(context, code, f"scripted {code.name}", f"SCRIPTED_{code.name}",
                    retry=("retried" not in options), retry_after_s=after)
        yield pb.GenerateResponse()  # never reached; makes this an async generator

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            "qarr.v1.RouterService",
            {
                "Generate": grpc.unary_stream_rpc_method_handler(
                    self.Generate,
                    request_deserializer=pb.GenerateRequest.FromString,
                    response_serializer=pb.GenerateResponse.SerializeToString,
                )
            },
        )
