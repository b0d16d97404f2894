"""The engine seam: what the tier servicer needs from an inference engine.

The vLLM adapter (vllm_engine.py) is the only module that imports vllm; the
fake engine (fake_engine.py) implements the same protocol for router tests,
benchmarks and fault injection.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol


class Finish(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"
    # The engine ended the request on an error of its own (the last message says so; the status is OK).
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Sampling:
    """Validated sampling parameters (see validation.py)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(slots=True)
class Delta:
    """Text produced since the previous delta of one request."""

    text: str
    tokens: int
    prompt_tokens: int
    completion_tokens: int
    finish: Finish | None = None


@dataclass(frozen=True, slots=True)
class Load:
    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class EngineInfo:
    model: str
    max_model_len: int
    # False for base models: chat turns then need the tier's prompt_template (prompting.py).
    chat_template: bool = True
    extra: dict[str, str] = field(default_factory=dict)


class EngineError(Exception):
    """Base of the errors an engine raises."""


class RequestRejected(EngineError, ValueError):
    """This request cannot be served as asked (the caller must change it).

    Raised only by QARR's own checks (validation.py, prompting.py, and the adapter where the
    model itself refuses the input); the message is shown to the caller, so it never echoes
    unbounded input."""


class EngineBusy(EngineError):
    """The engine refuses new work for now (its queue is full); retry later or elsewhere."""


class EngineDead(EngineError):
    """The engine can serve nothing more; the tier must be restarted."""


class Engine(Protocol):
    info: EngineInfo

    async def start(self) -> None:
        """Load the model; return when the engine can take requests."""

    async def tokenize(self, prompt: str | Sequence[ChatTurn]) -> list[int]:
        """Token ids of a text prompt, or of chat turns after the model's chat template.

        Runs off the event loop (a prompt of many KiB costs milliseconds of CPU)."""

    def generate(self, prompt_token_ids: list[int], sampling: Sampling, request_id: str) -> AsyncIterator[Delta]:
        """Stream deltas; closing the iterator early aborts the request in the engine."""

    def load(self) -> Load:
        """Running and waiting request counts and KV-cache use, as last reported."""

    @property
    def dead(self) -> bool:
        """True once the engine cannot serve any more requests."""

    async def shutdown(self) -> None:
        """Stop the engine and free its memory."""
