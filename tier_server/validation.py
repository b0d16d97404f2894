"""Turn a TierServiceGenerateRequest into engine inputs, or raise RequestRejected.

Every message here is shown to the caller as an INVALID_ARGUMENT status, so it
names the field and the allowed range.
"""

from __future__ import annotations

from collections.abc import Sequence

from tier_server.engine import ChatTurn, RequestRejected, Sampling

DEFAULT_MAX_TOKENS = 256
ROLES = frozenset({"system", "user", "assistant"})


def prompt_of(prompt: str, messages: Sequence) -> str | tuple[ChatTurn, ...]:
    if prompt and messages:
        raise RequestRejected("set either prompt or messages, not both")
    if messages:
        turns = []
        for i, m in enumerate(messages):
            if m.role not in ROLES:
                raise RequestRejected(f"messages[{i}].role must be one of {sorted(ROLES)}, got {m.role!r}")
            turns.append(ChatTurn(m.role, m.content))
        return tuple(turns)
    if not prompt:
        raise RequestRejected("prompt or messages is required")
    return prompt


def sampling_of(params, prompt_tokens: int, max_model_len: int) -> Sampling:
    """Check sampling values and that prompt plus max_tokens fits the context."""
    if prompt_tokens >= max_model_len:
        raise RequestRejected(
            f"prompt is {prompt_tokens} tokens, longer than this tier's max_model_len of {max_model_len}"
        )
    room = max_model_len - prompt_tokens
    if params.HasField("max_tokens"):
        max_tokens = params.max_tokens
        if max_tokens < 1:
            raise RequestRejected("sampling.max_tokens must be at least 1")
        if max_tokens > room:
            raise RequestRejected(
                f"prompt ({prompt_tokens} tokens) + sampling.max_tokens ({max_tokens}) exceeds "
                f"this tier's max_model_len of {max_model_len}"
            )
    else:
        max_tokens = min(DEFAULT_MAX_TOKENS, room)

    temperature = params.temperature if params.HasField("temperature") else 1.0
    if not 0.0 <= temperature <= 2.0 or temperature != temperature:
        raise RequestRejected(f"sampling.temperature must be within [0, 2], got {temperature}")
    top_p = params.top_p if params.HasField("top_p") else 1.0
    if not 0.0 < top_p <= 1.0:
        raise RequestRejected(f"sampling.top_p must be within (0, 1], got {top_p}")
    top_k = params.top_k if params.HasField("top_k") else -1
    if top_k == 0 or top_k < -1:
        raise RequestRejected(f"sampling.top_k must be -1 (all) or at least 1, got {top_k}")
    if any(not s for s in params.stop):
        raise RequestRejected("sampling.stop must not contain empty strings")
    if len(params.stop) > 16:
        raise RequestRejected("sampling.stop takes at most 16 strings")
    return Sampling(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=params.seed if params.HasField("seed") else None,
        stop=tuple(params.stop),
    )
