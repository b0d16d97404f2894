"""Complexity classifier: how demanding a request looks, when its caller gave no accuracy need.

Cheap on purpose (it runs once per request on the router): it looks at the
first few KiB of the prompt for code and reasoning markers, and at the
prompt's length, max_tokens and temperature. Classes: fast, balanced, precise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCAN_CHARS = 4096
CODE = re.compile(r"```|\bdef |\bclass |\bimport |#include|\bfunction\b|=>|\{\s*$|;\s*$|\bSELECT\b|\bstack trace\b", re.M)
REASONING = re.compile(
    r"\b(step by step|prove|proof|derive|why|explain|reason|calculate|compute|solve|analy[sz]e|compare|"
    r"evaluate|justify|how many|what if)\b",
    re.I,
)


@dataclass(frozen=True, slots=True)
class Signals:
    """What the classifier looks at (all cheap to get from the request)."""

    text: str  # the prompt, or the last user message; only the first SCAN_CHARS are read
    prompt_bytes: int
    max_tokens: int
    temperature: float | None


def classify(s: Signals) -> str:
    """fast | balanced | precise: points for code, reasoning, length, long answers and greedy decoding."""
    head = s.text[:SCAN_CHARS]
    score = 0
    if CODE.search(head):
        score += 2
    if REASONING.search(head):
        score += 2
    if s.prompt_bytes > 2000:
        score += 1
    if s.max_tokens > 512:
        score += 1
    if s.temperature is not None and s.temperature <= 0.2:
        score += 1
    if score >= 3:
        return "precise"
    if score >= 1:
        return "balanced"
    return "fast"
