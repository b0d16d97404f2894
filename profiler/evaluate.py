"""Accuracy of one tier on the eval set: greedy answers (temperature 0, fixed seed), scored deterministically."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from profiler.evalset import EvalItem
from profiler.measure import complete
from profiler.scorer import score

EVAL_MAX_TOKENS = 24


@dataclass
class EvalResult:
    correct: int = 0
    total: int = 0
    answers: dict[str, str] = field(default_factory=dict)  # item id -> model output
    wrong: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def by_category(self, items: list[EvalItem]) -> dict[str, float]:
        cats: dict[str, list[bool]] = {}
        wrong = set(self.wrong)
        for item in items:
            if item.id in self.answers:
                cats.setdefault(item.category, []).append(item.id not in wrong)
        return {c: sum(v) / len(v) for c, v in cats.items()}


async def evaluate(stub, items: list[EvalItem], max_tokens: int = EVAL_MAX_TOKENS, concurrency: int = 1,
                   on_done=None) -> EvalResult:
    """Score every item. concurrency 1 (the default) keeps batch composition, hence greedy output, fixed."""
    result = EvalResult()
    sem = asyncio.Semaphore(max(1, concurrency))

    async def one(item: EvalItem) -> tuple[EvalItem, str]:
        async with sem:
            c = await complete(stub, item.prompt, max_tokens)
        if on_done:
            on_done()
        return item, c.text

    for item, text in await asyncio.gather(*(one(i) for i in items)):
        result.total += 1
        result.answers[item.id] = text
        if score(item, text):
            result.correct += 1
        else:
            result.wrong.append(item.id)
    return result
