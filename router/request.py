"""A GenerateRequest as the router accepts it: parsed once, checked against the limits before any tokenizing."""

from __future__ import annotations

from google.protobuf.message import DecodeError

from mesh.config import RequestLimits
from qarr.v1 import router_service_pb2 as pb
from router.errors import InvalidRequest, clip

ROLES = frozenset({"system", "user", "assistant"})
# Room in a request for everything but the prompt text: roles, stop strings, ids, routing hints.
ENVELOPE_BYTES = 64 * 1024


def parse_request(raw: bytes, limits: RequestLimits) -> pb.GenerateRequest:
    """The request, or InvalidRequest naming the field. Sampling values are the tier's to check."""
    # Before parsing: decoding a 3.9 MB request (and checking its UTF-8) holds the event loop for 8-50 ms.
    most = limits.max_prompt_bytes + ENVELOPE_BYTES
    if len(raw) > most:
        raise InvalidRequest(
            f"request is {len(raw)} bytes; this router accepts at most {most} (prompts up to {limits.max_prompt_bytes})",
            "REQUEST_TOO_LARGE",
        )
    try:
        request = pb.GenerateRequest.FromString(raw)
    except DecodeError:
        raise InvalidRequest("request is not a valid qarr.v1.GenerateRequest", "BAD_REQUEST") from None
    if bool(request.prompt) == bool(request.messages):
        raise InvalidRequest("set exactly one of prompt and messages")
    if len(request.messages) > limits.max_messages:
        raise InvalidRequest(f"messages has {len(request.messages)} entries; at most {limits.max_messages}")
    size = len(request.prompt.encode()) if request.prompt else sum(len(m.content.encode()) for m in request.messages)
    if size > limits.max_prompt_bytes:
        raise InvalidRequest(
            f"prompt is {size} bytes; this router accepts at most {limits.max_prompt_bytes}", "PROMPT_TOO_LONG"
        )
    for i, m in enumerate(request.messages):
        if m.role not in ROLES:
            raise InvalidRequest(f"messages[{i}].role must be one of {sorted(ROLES)}, got {clip(m.role)}")
    if len(request.request_id) > limits.max_request_id_chars or not request.request_id.isprintable():
        # The same rule as the tiers' (ids reach log lines): no control characters, bounded.
        raise InvalidRequest(f"request_id must be at most {limits.max_request_id_chars} printable characters")
    routing = request.routing
    if routing.HasField("min_accuracy") and not (0.0 <= routing.min_accuracy <= 1.0):  # NaN fails both
        raise InvalidRequest(f"routing.min_accuracy must be within [0, 1], got {routing.min_accuracy}")
    return request

