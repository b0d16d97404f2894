"""Per-item eval outcomes: for every tier and eval item, correct or not, tokens, TTFT and latency.

The profiler writes them beside the profiles (`profiles/outcomes.jsonl`, one JSON object a line);
the router trainer (profiler/train.py) and the routing-quality benchmark read them. Every line
carries the eval set's name and sha256, so outcomes of different eval sets never mix silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field


class Outcome(BaseModel):
    """How one tier did on one eval item (greedy, max_tokens as the profiler's eval)."""

    tier: str
    item: str  # eval item id
    category: str = "general"
    prompt: str  # sent as the one user message
    correct: bool
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    ttft_ms: float = Field(ge=0)
    latency_ms: float = Field(ge=0)
    output: str = ""
    eval_set: str = ""
    eval_set_sha256: str = ""


def write_outcomes(outcomes: Iterable[Outcome], path: str | Path) -> None:
    """One JSON line per outcome, written atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(o.model_dump_json() + "\n" for o in outcomes))
    tmp.replace(path)


def load_outcomes(path: str | Path) -> list[Outcome]:
    """Every outcome of a file; ValueError naming the line when one is malformed or two eval sets mix."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(Outcome.model_validate_json(line))
        except ValueError as e:
            raise ValueError(f"{path}:{n}: {e}") from None
    hashes = {o.eval_set_sha256 for o in out}
    if len(hashes) > 1:
        raise ValueError(f"{path}: outcomes of {len(hashes)} different eval sets (sha256 {sorted(hashes)})")
    seen = set()
    for o in out:
        if (o.tier, o.item) in seen:
            raise ValueError(f"{path}: two outcomes for tier {o.tier} and item {o.item}")
        seen.add((o.tier, o.item))
    return out


@dataclass(frozen=True)
class Example:
    """One eval item with every tier's outcome on it (what training and the offline benchmark use)."""

    item: str
    category: str
    prompt: str
    outcomes: dict[str, Outcome]  # tier -> outcome

    def correct(self, tier: str) -> bool:
        return self.outcomes[tier].correct


def examples(outcomes: Iterable[Outcome], tiers: Iterable[str] | None = None) -> list[Example]:
    """Items (file order) that have an outcome on every one of `tiers` (default: every tier seen)."""
    by_item: dict[str, dict[str, Outcome]] = {}
    for o in outcomes:
        by_item.setdefault(o.item, {})[o.tier] = o
    wanted = list(tiers) if tiers is not None else list(dict.fromkeys(o.tier for o in outcomes))
    out = []
    for item, per_tier in by_item.items():
        if all(t in per_tier for t in wanted):
            first = per_tier[wanted[0]] if wanted else next(iter(per_tier.values()))
            out.append(Example(item, first.category, first.prompt, {t: per_tier[t] for t in wanted}))
    return out


def tiers_of(outcomes: Iterable[Outcome]) -> list[str]:
    return list(dict.fromkeys(o.tier for o in outcomes))


def eval_set_of(outcomes: list[Outcome]) -> tuple[str, str]:
    """(eval set name, sha256) the outcomes were measured on."""
    return (outcomes[0].eval_set, outcomes[0].eval_set_sha256) if outcomes else ("", "")

