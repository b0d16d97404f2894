"""A synthetic outcome set whose right tier is a known function of the text: tier `a` answers
arithmetic and never capitals, tier `b` the reverse (with optional label noise)."""

from __future__ import annotations

import random

from profiler.outcomes import Outcome

COUNTRIES = [
    "France", "Germany", "Italy", "Spain", "Japan", "China", "Russia", "Egypt", "Greece", "Portugal", "Austria",
    "Norway", "Sweden", "Finland", "Denmark", "Ireland", "Poland", "Hungary", "Belgium", "Canada", "Mexico",
    "Argentina", "Peru", "Chile", "Colombia", "Kenya", "Thailand", "India", "Indonesia", "Vietnam", "Iran", "Iraq",
    "Turkey", "Australia", "Cuba", "Ukraine", "Romania", "Switzerland", "Nigeria", "Ethiopia", "Brazil", "Morocco",
    "Ghana", "Nepal", "Mongolia", "Bolivia", "Uruguay", "Paraguay", "Ecuador", "Venezuela", "Senegal", "Mali",
    "Tunisia", "Algeria", "Libya", "Sudan", "Uganda", "Zambia", "Angola", "Namibia", "Iceland", "Estonia",
    "Latvia", "Lithuania", "Croatia", "Serbia", "Albania", "Bulgaria", "Slovakia", "Slovenia",
]
SHA = "5" * 64


def capital(country: str) -> str:
    return f"What is the capital of {country}?"


def arithmetic(rng: random.Random) -> str:
    return f"What is {rng.randint(2, 60)} {rng.choice('+-*')} {rng.randint(2, 60)}?"


def outcomes(prompts: list[tuple[str, str]], noise: float = 0.0, seed: int = 0, tiers=("a", "b")) -> list[Outcome]:
    """(kind, prompt) -> outcomes on tiers a and b: a right on arithmetic, b right on capitals;
    each label flipped with probability `noise`."""
    rng = random.Random(seed)
    out = []
    for n, (kind, prompt) in enumerate(prompts):
        for tier in tiers:
            right = (tier == "a") == (kind == "arithmetic")
            if rng.random() < noise:
                right = not right
            out.append(Outcome(tier=tier, item=f"{kind}-{n}", category=kind, prompt=prompt, correct=right,
                               prompt_tokens=12, completion_tokens=4, ttft_ms=20.0 if tier == "a" else 60.0,
                               latency_ms=80.0 if tier == "a" else 240.0, eval_set="synthetic.jsonl",
                               eval_set_sha256=SHA))
    return out


def split(seed: int = 0, per_kind: int = 40) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(training prompts, unseen prompts): different countries and different sums in each."""
    rng = random.Random(seed)
    countries = COUNTRIES[:]
    rng.shuffle(countries)
    train_c, test_c = countries[: len(countries) // 2], countries[len(countries) // 2:]
    train = [("capitals", capital(c)) for c in train_c] + [("arithmetic", arithmetic(rng)) for _ in range(per_kind)]
    seen = {p for _, p in train}
    test = [("capitals", capital(c)) for c in test_c]
    while len(test) < len(test_c) + per_kind:
        p = arithmetic(rng)
        if p not in seen:
            test.append(("arithmetic", p))
            seen.add(p)
    return train, test
