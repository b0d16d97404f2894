"""A deterministic in-process engine behind the same seam as vLLM.

For router unit tests, benchmarks that must measure the mesh and not the model,
and fault injection (`fail_next`, `die`). Never the only proof that a feature
works: end-to-end tests use the real engine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from tier_server.engine import ChatTurn, Delta, EngineDead, EngineError, EngineInfo, Finish, Load, Sampling

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


class FakeEngine:
    def __init__(
        self, model: str = "fake-model", max_model_len: int = 2048, token_delay_s: float = 0.0, chat_template: bool = True
    ) -> None:
        self.info = EngineInfo(model=model, max_model_len=max_model_len, chat_template=chat_template)
        self.token_delay_s = token_delay_s
        self.running = 0
        self.started = False
        self.aborted: list[str] = []
        self.fail_after_tokens: int | None = None  # raise EngineError after this many tokens
        self._dead = False

    async def start(self) -> None:
        self.started = True

    async def tokenize(self, prompt: str | Sequence[ChatTurn]) -> list[int]:
        text = prompt if isinstance(prompt, str) else " ".join(f"<{t.role}> {t.content}" for t in prompt)
        return [hash(w) & 0xFFFF for w in text.split()] or [0]

    async def generate(self, prompt_token_ids: list[int], sampling: Sampling, request_id: str) -> AsyncIterator[Delta]:
        if self._dead:
            raise EngineDead("fake engine is dead")
        self.running += 1
        finished = False
        try:
            for i in range(sampling.max_tokens):
                if self.token_delay_s:
                    await asyncio.sleep(self.token_delay_s)
                if self._dead:
                    raise EngineDead("fake engine died mid-stream")
                if self.fail_after_tokens is not None and i >= self.fail_after_tokens:
                    raise EngineError("injected failure")
                last = i == sampling.max_tokens - 1
                finished = last
                yield Delta(
                    text=WORDS[i % len(WORDS)] + " ",
                    tokens=1,
                    prompt_tokens=len(prompt_token_ids),
                    completion_tokens=i + 1,
                    finish=Finish.LENGTH if last else None,
                )
        finally:
            self.running -= 1
            if not finished:
                self.aborted.append(request_id)

    def load(self) -> Load:
        return Load(running=self.running, waiting=0, kv_cache_usage=min(1.0, self.running / 64))

    def die(self) -> None:
        self._dead = True

    @property
    def dead(self) -> bool:
        return self._dead

    async def shutdown(self) -> None:
        self.started = False
