"""Accuracy of one tier on the eval set: greedy answers (temperature 0, fixed seed), scored deterministically,
with every item's outcome (correct or not, tokens, TTFT, latency) kept for the router's predictor."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from profiler.evalset import EvalItem
from profiler.measure import Completion, complete
from profiler.scorer import score

EVAL_MAX_TOKENS = 24


@dataclass(frozen=True)
class ItemResult:
    item: EvalItem
    completion: Completion
    correct: bool


@dataclass
class EvalResult:
    items: list[ItemResult] = field(default_factory=list)  # eval set order

    @property
    def total(self) -> int:
        return len(self.items)

    @property
    def correct(self) -> int:
        return sum(r.correct for r in self.items)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    @property
    def answers(self) -> dict[str, str]:
        """item id -> model output"""
        return {r.item.id: r.completion.text for r in self.items}

    @property
    def wrong(self) -> list[str]:
        return [r.item.id for r in self.items if not r.correct]

    def by_category(self) -> dict[str, float]:
        cats: dict[str, list[bool]] = {}
        for r in self.items:
            cats.setdefault(r.item.category, []).append(r.correct)
        return {c: sum(v) / len(v) for c, v in cats.items()}


async def evaluate(stub, items: list[EvalItem], max_tokens: int = EVAL_MAX_TOKENS, concurrency: int = 1,
                   on_done=None) -> EvalResult:
    """Score every item. concurrency 1 (the default) keeps batch composition, hence greedy output, fixed,
    and makes each item's TTFT and latency its own."""
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(item: EvalItem) -> ItemResult:
        async with sem:
            c = await complete(stub, item.prompt, max_tokens)
        if on_done:
            on_done()
        return ItemResult(item, c, score(item, c.text))

    return EvalResult(list(await asyncio.gather(*(one(i) for i in items))))
