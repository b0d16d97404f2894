"""OpenAI's shapes as the HTTP door takes and writes them: request models, response and chunk builders.

Shapes only: no routing and no I/O (the door is router/http/app.py). Each OpenAI
request field is one of
- translated: model, messages / prompt, max_tokens / max_completion_tokens, temperature, top_p,
  seed, stop, n (1 only), stream, stream_options.include_usage; top_k (vLLM's extension);
  latency_budget_ms and min_accuracy (QARR's hints, sent by the SDKs' `extra_body`);
- ignored: metadata that does not change the output (user, metadata, store, service_tier,
  prompt_cache_key, safety_identifier, parallel_tool_calls, stream_options.include_obfuscation,
  a message's name);
- accepted only at its default, refused otherwise (400 naming the field, since the tiers cannot
  honour it): logprobs, top_logprobs, presence_penalty, frequency_penalty, logit_bias,
  response_format (text), tool_choice ("none"), tools (empty), modalities (["text"]); for
  /v1/completions also echo, suffix, best_of;
- anything else: refused as an unrecognized argument (400), as OpenAI does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from qarr.v1 import common_pb2, router_service_pb2 as pb

MAX_STOP = 16

FINISH_REASONS = {
    common_pb2.FINISH_REASON_STOP: "stop",
    common_pb2.FINISH_REASON_LENGTH: "length",
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(Strict):
    type: Literal["text"]
    text: str


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None  # ignored: the tiers' chat templates have no speaker names
    refusal: str | None = None  # an earlier assistant turn may carry it; ignored

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, content):
        if isinstance(content, list):
            for part in content:
                kind = part.get("type") if isinstance(part, dict) else None
                if kind != "text":
                    raise ValueError(f"only text content parts are supported, got {kind!r}")
        elif content is None:
            raise ValueError("content is required (tool calls are not supported)")
        return content

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    @property
    def qarr_role(self) -> str:
        return "system" if self.role == "developer" else self.role


class StreamOptions(Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None  # ignored: nothing is padded


class Common(Strict):
    """Fields both endpoints share."""

    # Fields accepted only at their default value: name -> the values that mean "default".
    DEFAULT_ONLY: ClassVar[dict[str, tuple]] = {
        "presence_penalty": (0,), "frequency_penalty": (0,), "logit_bias": ({},),
    }

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1, le=2**31 - 1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1, le=2**31 - 1)  # vLLM's extension: -1 = all tokens
    seed: int | None = Field(None, ge=0, le=2**64 - 1)
    stop: str | list[str] | None = None
    n: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    # QARR's routing hints (also the x-qarr-latency-budget-ms / x-qarr-min-accuracy headers).
    latency_budget_ms: int | None = Field(None, ge=0, le=2**32 - 1)
    min_accuracy: float | None = Field(None, ge=0, le=1)
    # Ignored: metadata with no effect on the output.
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    # Refused unless at their defaults (DEFAULT_ONLY).
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        if n is not None and n != 1:
            raise ValueError("n must be 1: QARR returns one choice per request")
        return n

    @field_validator("stop", mode="before")
    @classmethod
    def _stops(cls, stop):
        if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)
        ):
            raise ValueError("stop must be a string or a list of strings")
        stops = [stop] if isinstance(stop, str) else stop or []
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stop

    def check(self) -> None:
        """What pydantic's field types cannot say: defaults-only fields, stream_options without stream."""
        for name, defaults in self.DEFAULT_ONLY.items():
            value = getattr(self, name)
            if value is not None and value not in defaults:
                raise BadRequest(f"{name} is not supported by QARR tiers; leave it unset or {json.dumps(defaults[0])}", name)
        if self.stream_options is not None and not self.stream:
            raise BadRequest("stream_options can only be set when stream is true", "stream_options")

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or ())

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(Common):
    """POST /v1/chat/completions."""

    DEFAULT_ONLY: ClassVar[dict[str, tuple]] = {
        **Common.DEFAULT_ONLY, "logprobs": (False,), "top_logprobs": (0,), "tool_choice": ("none",), "tools": ([],),
        "modalities": (["text"],), "response_format": ({"type": "text"},),
    }

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=2**31 - 1)  # wins over max_tokens
    parallel_tool_calls: bool | None = None  # ignored: no tools
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict | None = None
    tool_choice: str | dict | None = None
    tools: list | None = None
    modalities: list[str] | None = None

    def limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


# OpenAI's legacy completions default to 16 tokens when max_tokens is unset; so does the door.
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


class CompletionRequest(Common):
    """POST /v1/completions (one prompt)."""

    DEFAULT_ONLY: ClassVar[dict[str, tuple]] = {
        **Common.DEFAULT_ONLY, "echo": (False,), "suffix": ("",), "best_of": (1,), "logprobs": (0,),
    }

    prompt: str | list[str]
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_text_prompt(cls, prompt):
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ValueError("send one prompt per request (a string, or a list of exactly one string)")
            if not isinstance(prompt[0], str):
                raise ValueError("prompts as token ids are not supported; send text")
        if prompt == "" or prompt == [""]:
            raise ValueError("prompt must not be empty")
        return prompt

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def limit(self) -> int:
        return self.max_tokens if self.max_tokens is not None else COMPLETIONS_DEFAULT_MAX_TOKENS


def parse(model: type[Common], body: bytes) -> Common:
    """The checked request, or BadRequest naming the first offending field (OpenAI's wording for unknown ones)."""
    try:
        request = model.model_validate_json(body)
    except ValidationError as e:
        raise BadRequest.from_validation(e) from None
    request.check()
    return request


class BadRequest(ValueError):
    """A request body the door refuses (400), with the field it blames (OpenAI's `param`)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    @classmethod
    def from_validation(cls, e: ValidationError) -> BadRequest:
        first = e.errors(include_url=False, include_context=False, include_input=False)[0]
        if first["type"] == "json_invalid":
            return cls(f"request body is not valid JSON: {first['msg']}")
        if first["type"] == "model_type":
            return cls("request body must be a JSON object")
        param = _param(first["loc"])
        if first["type"] == "extra_forbidden":
            return cls(f"Unrecognized request argument supplied: {param}", param)
        if first["type"] == "missing":
            return cls(f"{param} is required", param)
        message = first["msg"].removeprefix("Value error, ")
        return cls(f"{param}: {message}" if param else message, param)


def _param(loc: tuple) -> str | None:
    """('messages', 0, 'content') -> 'messages[0].content'; pydantic's union branch names are dropped."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("str", "int", "float", "bool") or "[" in part or part.startswith("function-"):
            continue
        else:
            out += f".{part}" if out else part
    return out or None


def generate_request(body: Common, chat: bool, tier: str, request_id: str, latency_budget_ms: int | None,
                     min_accuracy: float | None) -> pb.GenerateRequest:
    """The qarr.v1.GenerateRequest for a checked body: `tier` pins ('' routes), the hints steer the choice."""
    req = pb.GenerateRequest(request_id=request_id)
    if chat:
        req.messages.extend(common_pb2.ChatMessage(role=m.qarr_role, content=m.text()) for m in body.messages)
    else:
        req.prompt = body.text()
    s = req.sampling
    limit = body.limit()
    if limit is not None:
        s.max_tokens = limit
    if body.temperature is not None:
        s.temperature = body.temperature
    if body.top_p is not None:
        s.top_p = body.top_p
    if body.top_k is not None:
        s.top_k = body.top_k
    if body.seed is not None:
        s.seed = body.seed
    if body.stop:
        s.stop.extend(body.stops())
    routing = req.routing
    routing.tier = tier
    if latency_budget_ms:
        routing.latency_budget_ms = latency_budget_ms
    if min_accuracy is not None:
        routing.min_accuracy = min_accuracy
    return req


# ---------------------------------------------------------------- responses

def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def qarr_info(last) -> dict:
    """The `qarr` field: who served the request and why (from the core's last message)."""
    return {"tier": last.tier, "model": last.model, "quantization": last.quantization,
            "routing_reason": last.routing_reason, "attempts": last.attempts}


def finish_reason(last) -> str:
    return FINISH_REASONS.get(last.finish_reason, "stop")


def chat_response(cid: str, created: int, text: str, last) -> dict:
    return {
        "id": cid, "object": "chat.completion", "created": created, "model": last.tier,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                     "finish_reason": finish_reason(last)}],
        "usage": usage(last.usage.prompt_tokens, last.usage.completion_tokens),
        "qarr": qarr_info(last),
    }


def completion_response(cid: str, created: int, text: str, last) -> dict:
    return {
        "id": cid, "object": "text_completion", "created": created, "model": last.tier,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason(last)}],
        "usage": usage(last.usage.prompt_tokens, last.usage.completion_tokens),
        "qarr": qarr_info(last),
    }


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class ChunkFormat:
    """Prebuilt SSE bytes around each text delta's JSON string: a chunk is `first|each + json(text) + end`.
    Built once per request, so a chunk costs one JSON string encoding and one join."""

    first: bytes
    each: bytes
    end: bytes
    head: dict  # id, object, created, model: the fields every chunk of this stream repeats
    chat: bool
    include_usage: bool

    def text(self, text: str, first: bool = False) -> bytes:
        return b"".join((self.first if first else self.each, json.dumps(text).encode(), self.end))

    def finish(self, last) -> bytes:
        """The chunk with finish_reason (and `qarr`), the usage chunk when asked for, then [DONE]."""
        delta = {"delta": {}} if self.chat else {"text": ""}
        done = {**self.head, "choices": [{"index": 0, **delta, "logprobs": None, "finish_reason": finish_reason(last)}]}
        info = qarr_info(last)
        if self.include_usage:
            done["usage"] = None
            tail = {**self.head, "choices": [], "usage": usage(last.usage.prompt_tokens, last.usage.completion_tokens),
                    "qarr": info}
            return b"data: " + dumps({**done, "qarr": info}) + b"\n\ndata: " + dumps(tail) + b"\n\n" + DONE
        return b"data: " + dumps({**done, "qarr": info}) + b"\n\n" + DONE


DONE = b"data: [DONE]\n\n"


def chunk_format(chat: bool, cid: str, created: int, model: str, include_usage: bool) -> ChunkFormat:
    head = {"id": cid, "object": "chat.completion.chunk" if chat else "text_completion", "created": created,
            "model": model}
    opening = b"data: " + dumps(head)[:-1] + b',"choices":[{"index":0,'
    closing = b',"logprobs":null,"finish_reason":null}]' + (b',"usage":null' if include_usage else b"") + b"}\n\n"
    if chat:
        return ChunkFormat(opening + b'"delta":{"role":"assistant","content":', opening + b'"delta":{"content":',
                           b"}" + closing, head, True, include_usage)
    return ChunkFormat(opening + b'"text":', opening + b'"text":', closing, head, False, include_usage)


def error_body(status_type: str, message: str, code: str | None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": status_type, "param": param, "code": code}}
