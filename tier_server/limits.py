"""What one request may ask of a tier, in one place.

Every bound here is checked before any tokenizing, so a hostile request costs the
tier microseconds and never holds its event loop. A request over a bound gets
INVALID_ARGUMENT naming the field and the limit; a message larger than
`max_request_bytes` is refused by gRPC itself with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("assistant", "system", "user")
# Bytes of prompt text per token of context the default `max_prompt_bytes` allows: English runs at
# about 4 bytes a token, so only pathological text needs more.
PROMPT_BYTES_PER_TOKEN = 64


@dataclass(frozen=True, slots=True)
class Limits:
    # Whole request message (gRPC's max_receive_message_length; gRPC's own default is 4 MiB).
    max_request_bytes: int = 4 * 1024 * 1024
    # prompt, or the sum of the messages' contents, in UTF-8 bytes.
    max_prompt_bytes: int = PROMPT_BYTES_PER_TOKEN * 2048
    max_messages: int = 256
    max_stop: int = 16
    max_stop_bytes: int = 256
    max_request_id_chars: int = 128  # the router's limit too (mesh.config.RequestLimits)
    # Seeds are uint64 on the wire; engines take signed 64-bit ones.
    max_seed: int = 2**63 - 1
    max_temperature: float = 2.0
    # Positive temperatures below this act as this (vLLM's floor; raising them here spares a warning per request).
    temperature_floor: float = 0.01

    @classmethod
    def for_tier(
        cls, max_model_len: int, *, max_request_bytes: int | None = None, max_prompt_bytes: int | None = None,
        max_messages: int | None = None,
    ) -> Limits:
        """The defaults, with the prompt bound scaled to the tier's context and any configured override."""
        given = {"max_request_bytes": max_request_bytes, "max_prompt_bytes": max_prompt_bytes, "max_messages": max_messages}
        values = {k: v for k, v in given.items() if v is not None}
        values.setdefault("max_prompt_bytes", PROMPT_BYTES_PER_TOKEN * max_model_len)
        return cls(**values)


def clip(text: str, limit: int = 32) -> str:
    """`text` quoted for an error message, at most `limit` + 2 characters (escapes included), so a message
    never echoes unbounded input."""
    quoted = repr(text[:limit])
    if len(text) > limit or len(quoted) > limit + 2:
        return quoted[: limit + 1] + "…"
    return quoted
