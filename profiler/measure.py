"""Latency and throughput of one tier, measured over its gRPC Generate stream."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass

import grpc

from mesh.config import ClientTLS
from mesh.tls import open_channel
from qarr.v1 import common_pb2, tier_service_pb2, tier_service_pb2_grpc

SEED = 1234
# Prompts that invite long answers, so decode runs for the whole max_tokens.
LONG_ANSWER_PROMPTS = (
    "Write a long story about a robot who learns to paint.",
    "Explain in detail how a steam engine works.",
    "Describe a walk through a busy city market, with many details.",
    "Write a long letter to a friend about your summer holiday.",
)
PREFILL_PARAGRAPH = (
    "The committee met on a rainy Tuesday to discuss the budget for the new library, the repairs to the old "
    "bridge, the timetable of the summer festival and the plans for a bicycle lane along the river. "
)


@dataclass(frozen=True)
class Completion:
    text: str
    ttft_s: float  # time to the first text chunk
    total_s: float
    prompt_tokens: int
    completion_tokens: int

    @property
    def decode_tps(self) -> float:
        """Tokens/s after the first token (whole request when it produced a single token)."""
        if self.completion_tokens > 1 and self.total_s > self.ttft_s:
            return (self.completion_tokens - 1) / (self.total_s - self.ttft_s)
        return self.completion_tokens / self.total_s if self.total_s > 0 else 0.0


def request(prompt: str, max_tokens: int, seed: int = SEED) -> tier_service_pb2.TierServiceGenerateRequest:
    return tier_service_pb2.TierServiceGenerateRequest(
        messages=[common_pb2.ChatMessage(role="user", content=prompt)],
        sampling=common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=seed),
    )


async def complete(stub: tier_service_pb2_grpc.TierServiceStub, prompt: str, max_tokens: int,
                   timeout_s: float = 300.0) -> Completion:
    """One greedy request; text, TTFT and token counts."""
    start = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    usage = None
    async for msg in stub.Generate(request(prompt, max_tokens), timeout=timeout_s):
        if msg.text:
            if first is None:
                first = time.perf_counter()
            parts.append(msg.text)
        if msg.HasField("usage"):
            usage = msg.usage
    end = time.perf_counter()
    return Completion(
        text="".join(parts),
        ttft_s=(first or end) - start,
        total_s=end - start,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
    )


@dataclass(frozen=True)
class Speed:
    ttft_ms_p50: float
    ttft_ms_p95: float
    decode_tps_c1: float
    decode_tps_by_concurrency: dict[int, float]  # aggregate tokens/s with n streams in flight
    prompt_tps: float


class TierProbe:
    """Measures one tier at `address`; every call is a real Generate stream."""

    def __init__(self, address: str, tls: ClientTLS | None = None) -> None:
        """`tls`: how to reach a tier that serves TLS (the mesh's upstream_tls); None: plaintext."""
        self.address = address
        self._channel = open_channel(address, tls)
        self.stub = tier_service_pb2_grpc.TierServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def sequential(self, requests: int, max_tokens: int, on_done=None) -> list[Completion]:
        out = []
        for i in range(requests):
            out.append(await complete(self.stub, LONG_ANSWER_PROMPTS[i % len(LONG_ANSWER_PROMPTS)], max_tokens))
            if on_done:
                on_done()
        return out

    async def concurrent_tps(self, streams: int, max_tokens: int) -> float:
        """Generated tokens per second summed over `streams` requests started together."""
        start = time.perf_counter()
        done = await asyncio.gather(*(complete(self.stub, LONG_ANSWER_PROMPTS[i % len(LONG_ANSWER_PROMPTS)], max_tokens)
                                      for i in range(streams)))
        wall = time.perf_counter() - start
        return sum(c.completion_tokens for c in done) / wall if wall > 0 else 0.0

    async def prompt_tps(self, prompt_tokens: int, repeats: int = 3) -> float:
        """Prefill speed: prompt tokens / time to first token, for a long prompt and one output token."""
        # ~45 tokens per paragraph with SmolLM2's tokenizer; the server reports the exact count.
        prompt = "Summarize: " + PREFILL_PARAGRAPH * max(1, prompt_tokens // 45)
        rates = []
        for _ in range(repeats):
            c = await complete(self.stub, prompt, max_tokens=1)
            if c.ttft_s > 0 and c.prompt_tokens:
                rates.append(c.prompt_tokens / c.ttft_s)
        return statistics.median(rates) if rates else 0.0
