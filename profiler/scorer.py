"""Deterministic scoring of one model answer against one eval item (exact, contains, numeric, choice)."""

from __future__ import annotations

import re
import unicodedata

from profiler.evalset import EvalItem

_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
          "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}


def normalize(text: str) -> str:
    """Lower case, accents folded, punctuation dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def numbers(text: str) -> list[float]:
    found = [float(m.group().replace(",", "")) for m in _NUMBER.finditer(text)]
    return found


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line
    return ""


def _exact(item: EvalItem, output: str) -> bool:
    got = normalize(_first_line(output))
    return any(got == normalize(a) for a in (item.answer, *item.aliases))


def _contains(item: EvalItem, output: str) -> bool:
    got = f" {normalize(output)} "
    return any(f" {normalize(a)} " in got for a in (item.answer, *item.aliases))


def _numeric(item: EvalItem, output: str) -> bool:
    """The first number in the answer that is not echoed from the prompt (spelled-out 0-12 count too)."""
    echoed = set(numbers(item.prompt))
    candidates: list[float] = []
    for token in output.split():
        found = numbers(token)
        candidates += found
        if not found and normalize(token) in _WORDS:
            candidates.append(float(_WORDS[normalize(token)]))
    for value in candidates:
        if value in echoed:
            continue
        return abs(value - float(item.answer)) <= item.tolerance
    return False


def _choice(item: EvalItem, output: str) -> bool:
    """A standalone option letter (first one wins), else the text of exactly one option."""
    letters = "ABCDEFGHIJ"[: len(item.choices)]
    text = output.strip()
    patterns = (
        rf"^\(?([{letters}])\b(?:[.):]|\s*$)",  # "B", "B.", "(B)", "B: Berlin"
        rf"answer is:?\s*\(?([{letters}])\b",  # "The answer is B"
        rf"(?<![A-Za-z])\(?([{letters}])[.)](?=\s|$)",  # "... B) Berlin"
    )
    for pattern in patterns:
        m = re.search(pattern, text, flags=re.IGNORECASE if "answer" in pattern else 0)
        if m:
            return m.group(1).upper() == item.answer.upper()
    got = f" {normalize(output)} "
    named = [i for i, c in enumerate(item.choices) if f" {normalize(c)} " in got]
    return len(named) == 1 and letters[named[0]] == item.answer.upper()


_SCORERS = {"exact": _exact, "contains": _contains, "numeric": _numeric, "choice": _choice}


def score(item: EvalItem, output: str) -> bool:
    """True when `output` answers `item` correctly under the item's scoring mode."""
    return _SCORERS[item.scoring](item, output)
