"""A deterministic in-process engine behind the same seam as vLLM.

For router unit tests, benchmarks that must measure the mesh and not the model,
and fault injection (`fail_after_tokens`, `die`). With `engine_process=True` it
also runs a stand-in for vLLM's EngineCore process: when that process dies, by a
kill or a crash, the engine is dead, as a vLLM engine is when its EngineCore
dies. Never the only proof that a feature works: end-to-end tests use the real
engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Sequence

from tier_server.engine import ChatTurn, Delta, EngineDead, EngineError, EngineInfo, Finish, Load, Sampling

WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
# The stand-in engine process: it waits for its stdin to close (the tier exited) or to be killed.
ENGINE_PROCESS = (sys.executable, "-c", "import sys; sys.stdin.read()", "qarr-fake-engine-core")


class FakeEngine:
    def __init__(
        self, model: str = "fake-model", max_model_len: int = 2048, token_delay_s: float = 0.0, chat_template: bool = True,
        engine_process: bool = False,
    ) -> None:
        self.info = EngineInfo(model=model, max_model_len=max_model_len, chat_template=chat_template)
        self.token_delay_s = token_delay_s
        self.running = 0
        self.started = False
        self.aborted: list[str] = []
        self.fail_after_tokens: int | None = None  # raise EngineError after this many tokens
        self._dead = False
        self.engine_process = engine_process
        self.process: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task | None = None

    async def start(self) -> None:
        if self.engine_process:
            self.process = await asyncio.create_subprocess_exec(*ENGINE_PROCESS, stdin=asyncio.subprocess.PIPE)
            self._watch = asyncio.create_task(self._die_with_process(), name="fake-engine-process")
        self.started = True

    async def _die_with_process(self) -> None:
        await self.process.wait()
        self.die()

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
        if self.process is not None:
            if self._watch is not None:
                self._watch.cancel()
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
