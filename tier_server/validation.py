"""Turn the bytes of a Generate call into engine inputs, or raise RequestRejected.

Two steps: `check_request` parses and checks everything that needs no tokenizer
(size, roles, sampling ranges, stops, ids) against the tier's Limits; after
tokenizing, `fit_context` checks that prompt plus max_tokens fits the context.
Every message here is shown to the caller as INVALID_ARGUMENT: it names the
field and the allowed range, and quotes caller text only clipped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from google.protobuf.message import DecodeError

from mesh.config import default_max_tokens
from qarr.v1 import tier_service_pb2
from tier_server.engine import ChatTurn, RequestRejected, Sampling
from tier_server.limits import ROLES, Limits, clip

Request = tier_service_pb2.TierServiceGenerateRequest


@dataclass(frozen=True, slots=True)
class CheckedRequest:
    """A request that passed every check that needs no tokenizer."""

    prompt: str | tuple[ChatTurn, ...]
    request_id: str
    sampling: Sampling  # max_tokens is the caller's, or 0 when unset (fit_context decides)


def parse(raw: bytes) -> Request:
    try:
        return Request.FromString(raw)
    except DecodeError:
        raise RequestRejected("request is not a valid qarr.v1.TierServiceGenerateRequest") from None


def check_request(request: Request, limits: Limits, size: int) -> CheckedRequest:
    """`size` is the request's encoded size: when it is within max_prompt_bytes the prompt is too."""
    return CheckedRequest(
        prompt=prompt_of(request, limits, size),
        request_id=request_id_of(request.request_id, limits),
        sampling=sampling_of(request.sampling, limits),
    )


def prompt_of(request: Request, limits: Limits, size: int) -> str | tuple[ChatTurn, ...]:
    prompt, messages = request.prompt, request.messages
    if prompt and messages:
        raise RequestRejected("set either prompt or messages, not both")
    if len(messages) > limits.max_messages:
        raise RequestRejected(f"messages has {len(messages)} entries; this tier takes at most {limits.max_messages}")
    if size > limits.max_prompt_bytes:
        n = len(prompt.encode()) if prompt else sum(len(m.content.encode()) for m in messages)
        if n > limits.max_prompt_bytes:
            raise RequestRejected(f"prompt is {n} bytes; this tier takes at most {limits.max_prompt_bytes}")
    if messages:
        turns = []
        for i, m in enumerate(messages):
            if m.role not in ROLES:
                raise RequestRejected(f"messages[{i}].role must be one of {', '.join(ROLES)}; got {clip(m.role)}")
            turns.append(ChatTurn(m.role, m.content))
        return tuple(turns)
    if not prompt:
        raise RequestRejected("prompt or messages is required")
    return prompt


def request_id_of(request_id: str, limits: Limits) -> str:
    """'' (the servicer makes one), or up to max_request_id_chars printable characters (no line breaks,
    tabs or other controls: it reaches log lines)."""
    if len(request_id) > limits.max_request_id_chars or not request_id.isprintable():
        raise RequestRejected(
            f"request_id must be at most {limits.max_request_id_chars} printable characters; got {clip(request_id)}"
        )
    return request_id


def sampling_of(params, limits: Limits) -> Sampling:
    """Check sampling values against their ranges (NaN and infinities are out of every range)."""
    max_tokens = params.max_tokens if params.HasField("max_tokens") else 0
    if params.HasField("max_tokens") and max_tokens < 1:
        raise RequestRejected("sampling.max_tokens must be at least 1")
    temperature = params.temperature if params.HasField("temperature") else 1.0
    if not 0.0 <= temperature <= limits.max_temperature:
        raise RequestRejected(f"sampling.temperature must be within [0, {limits.max_temperature:g}], got {temperature:g}")
    if 0.0 < temperature < limits.temperature_floor:
        temperature = limits.temperature_floor
    top_p = params.top_p if params.HasField("top_p") else 1.0
    if not 0.0 < top_p <= 1.0:
        raise RequestRejected(f"sampling.top_p must be within (0, 1], got {top_p:g}")
    top_k = params.top_k if params.HasField("top_k") else -1
    if top_k == 0 or top_k < -1:
        raise RequestRejected(f"sampling.top_k must be -1 (all) or at least 1, got {top_k}")
    seed = params.seed if params.HasField("seed") else None
    if seed is not None and seed > limits.max_seed:
        raise RequestRejected(f"sampling.seed must be within [0, 2**63 - 1], got {seed}")
    stop = params.stop
    if len(stop) > limits.max_stop:
        raise RequestRejected(f"sampling.stop takes at most {limits.max_stop} strings, got {len(stop)}")
    for i, s in enumerate(stop):
        if not s:
            raise RequestRejected(f"sampling.stop[{i}] must not be empty")
        if len(s.encode()) > limits.max_stop_bytes:
            raise RequestRejected(f"sampling.stop[{i}] is longer than {limits.max_stop_bytes} bytes")
    return Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k, seed=seed, stop=tuple(stop))


def fit_context(sampling: Sampling, prompt_tokens: int, max_model_len: int) -> Sampling:
    """The sampling to run: prompt plus max_tokens must fit the context; unset max_tokens takes the shared default."""
    if prompt_tokens >= max_model_len:
        raise RequestRejected(
            f"prompt is {prompt_tokens} tokens, longer than this tier's max_model_len of {max_model_len}"
        )
    if not sampling.max_tokens:
        return replace(sampling, max_tokens=default_max_tokens(prompt_tokens, max_model_len))
    if prompt_tokens + sampling.max_tokens > max_model_len:
        raise RequestRejected(
            f"prompt ({prompt_tokens} tokens) + sampling.max_tokens ({sampling.max_tokens}) exceeds "
            f"this tier's max_model_len of {max_model_len}"
        )
    return sampling
