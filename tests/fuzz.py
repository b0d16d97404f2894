"""Hostile input for Generate, reusable at the router and at a tier.

TierServiceGenerateRequest and GenerateRequest share field numbers 1-3 and 5, so
`generate_requests(cls)` fills those (prompt, messages, sampling, request_id) for
either class; `router_requests(tiers)` adds the router's routing hints on top. Values
cover the edges: empty, huge, NaN/±inf/subnormal floats, full integer ranges,
NUL and non-ASCII text, unknown roles. `random_bodies` gives raw byte strings,
deterministic for a seed. `outcome` (blocking) and `outcome_async` (grpc.aio) send
one raw body and read the whole stream.
"""

from __future__ import annotations

import random

import grpc
from hypothesis import strategies as st

from mesh.status import reason_of
from qarr.v1 import common_pb2

# What a server may answer to anything a caller sends (never UNKNOWN, INTERNAL or a hang).
ALLOWED = frozenset({grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED})

UINT32 = st.integers(0, 2**32 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)
UINT64 = st.integers(0, 2**64 - 1)
FLOAT32 = st.floats(width=32, allow_nan=True, allow_infinity=True, allow_subnormal=True)
CHARS = st.characters(codec="utf-8")  # any code point that UTF-8 can carry (NUL included, no lone surrogates)
SHORT_TEXT = st.text(CHARS, max_size=40)
# Long text costs hypothesis nothing as a repeated character: up to 300 KB, past the tiers' prompt bound.
HUGE_TEXT = st.builds(lambda c, n: c * n, CHARS, st.integers(0, 300_000))
TEXT = st.one_of(SHORT_TEXT, HUGE_TEXT)


@st.composite
def sampling_params(draw) -> common_pb2.SamplingParams:
    params = common_pb2.SamplingParams()
    for field, values in (("max_tokens", UINT32), ("temperature", FLOAT32), ("top_p", FLOAT32), ("top_k", INT32), ("seed", UINT64)):
        if draw(st.booleans()):
            setattr(params, field, draw(values))
    params.stop.extend(draw(st.lists(st.one_of(SHORT_TEXT, HUGE_TEXT.map(lambda s: s[:2000])), max_size=20)))
    return params


@st.composite
def generate_requests(draw, cls):
    """A request of `cls` (TierServiceGenerateRequest or GenerateRequest) with hostile values in every shared field."""
    request = cls()
    shape = draw(st.sampled_from(["prompt", "messages", "both", "neither"]))
    if shape in ("prompt", "both"):
        request.prompt = draw(TEXT)
    if shape in ("messages", "both"):
        roles = st.one_of(st.sampled_from(["system", "user", "assistant"]), TEXT)
        for role, content in draw(st.lists(st.tuples(roles, TEXT), max_size=8)) + [("user", "x")] * draw(st.sampled_from([0, 0, 300])):
            request.messages.add(role=role, content=content)
    if draw(st.booleans()):
        request.sampling.CopyFrom(draw(sampling_params()))
    if draw(st.booleans()):
        request.request_id = draw(TEXT)
    return request


@st.composite
def router_requests(draw, tiers: tuple[str, ...] = ()):
    """A GenerateRequest with hostile values in every field, routing hints included: a known tier, an unknown
    or huge name, any latency budget, min_accuracy anywhere (NaN, infinities, outside [0, 1])."""
    from qarr.v1 import router_service_pb2

    request = draw(generate_requests(router_service_pb2.GenerateRequest))
    if draw(st.booleans()):
        request.routing.tier = draw(st.one_of(st.sampled_from(tiers or ("",)), TEXT))
    if draw(st.booleans()):
        request.routing.latency_budget_ms = draw(UINT32)
    if draw(st.booleans()):
        request.routing.min_accuracy = draw(FLOAT32)
    return request


def random_bodies(n: int, seed: int = 0, max_len: int = 2048) -> list[bytes]:
    """`n` random byte strings (lengths 0..max_len), the same ones for the same seed."""
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(0, max_len)) for _ in range(n)]


async def outcome_async(channel: grpc.aio.Channel, method: str, body: bytes, timeout: float = 10.0) -> tuple[grpc.StatusCode, str, str]:
    """`outcome` over a grpc.aio channel."""
    call = channel.unary_stream(method, request_serializer=None, response_deserializer=None)
    try:
        async for _ in call(body, timeout=timeout):
            pass
    except grpc.aio.AioRpcError as e:
        return e.code(), e.details() or "", reason_of(e.trailing_metadata())
    return grpc.StatusCode.OK, "", ""


def outcome(channel: grpc.Channel, method: str, body: bytes, timeout: float = 10.0) -> tuple[grpc.StatusCode, str, str]:
    """Send `body` as the request of server-streaming `method`; (code, details, ErrorInfo reason) once the stream ends."""
    call = channel.unary_stream(method, request_serializer=None, response_deserializer=None)
    try:
        for _ in call(body, timeout=timeout):
            pass
    except grpc.RpcError as e:
        return e.code(), e.details() or "", reason_of(e.trailing_metadata())
    return grpc.StatusCode.OK, "", ""
