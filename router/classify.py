"""Complexity classifier: how demanding a request looks, when its caller gave no accuracy need.

Cheap on purpose (it runs once per request on the router): it looks at the
first few KiB of the prompt for code and reasoning markers, and at the
prompt's length, max_tokens and temperature. Classes: fast, balanced, precise.
"""

from __future__ import annotations

from dataclasses import dataclass

SCAN_CHARS = 4096
# Plain substring tests (C speed); a regex over the same markers cost ~75 us per request.
CODE = ("```", "def ", "class ", "import ", "#include", "function ", "=>", "};", "select ", "traceback", "stack trace")
REASONING = (
    "step by step", "prove", "proof", "derive", "why ", "explain", "reason", "calculate", "compute", "solve",
    "analyse", "analyze", "compare", "evaluate", "justify", "how many", "what if",
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
    head = s.text[:SCAN_CHARS].lower()
    score = 0
    if any(marker in head for marker in CODE):
        score += 2
    if any(marker in head for marker in REASONING):
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
