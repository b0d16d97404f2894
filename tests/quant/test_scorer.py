"""The scorer: each mode accepts the right answers and rejects the wrong ones, deterministically."""

from __future__ import annotations

import pytest

from profiler.evalset import EvalItem
from profiler.scorer import normalize, score


def item(**kw) -> EvalItem:
    return EvalItem(id="t", prompt=kw.pop("prompt", "Q?"), **kw)


@pytest.mark.parametrize("output,ok", [
    ("Paris", True), ("The capital of France is Paris.", True), ("paris!", True), ("Lyon", False),
    ("Parisian food", False), ("", False),
])
def test_contains_matches_whole_words(output, ok):
    """contains: the answer as whole words anywhere in the output, case and punctuation ignored."""
    assert score(item(answer="Paris", scoring="contains"), output) is ok


def test_contains_accepts_aliases_and_accents():
    """contains: aliases count and accents are folded."""
    it = item(answer="Bogota", scoring="contains", aliases=["Santa Fe de Bogotá"])
    assert score(it, "It is Bogotá.")
    assert score(it, "santa fe de bogota")


@pytest.mark.parametrize("output,ok", [
    ("yes", True), ("Yes.", True), ("Yes\nbecause...", True), ("Yes, it is", False), ("no", False),
])
def test_exact_compares_the_first_line(output, ok):
    """exact: the normalised first non-empty line equals the answer."""
    assert score(item(answer="yes", scoring="exact"), output) is ok


@pytest.mark.parametrize("output,ok", [
    ("35", True), ("19 + 16 = 35", True), ("The answer is 35.", True), ("thirty-five", False), ("36", False),
    ("It is 34 or 35", False), ("", False), ("1,035", False),
])
def test_numeric_skips_numbers_echoed_from_the_prompt(output, ok):
    """numeric: the first number not already in the prompt must equal the answer."""
    assert score(item(prompt="What is 19 + 16?", answer="35", scoring="numeric"), output) is ok


def test_numeric_tolerance_and_number_words():
    """numeric: tolerance widens the match; spelled-out small numbers count."""
    assert score(item(prompt="Pi?", answer="3.14", scoring="numeric", tolerance=0.01), "about 3.141")
    assert score(item(prompt="Legs of a spider?", answer="8", scoring="numeric"), "A spider has eight legs.")


@pytest.mark.parametrize("output,ok", [
    ("B", True), ("B. Dog", True), ("(B)", True), ("The answer is B.", True), ("Dog", True),
    ("A. Shark", False), ("A", False), ("Shark or Dog", False), ("C) Eagle", False),
])
def test_choice_reads_the_letter_or_the_option_text(output, ok):
    """choice: an option letter (first wins) or the text of exactly one option."""
    it = item(answer="B", scoring="choice", choices=["Shark", "Dog", "Eagle", "Frog"])
    assert score(it, output) is ok


def test_choice_item_needs_a_valid_letter():
    """A choice item whose answer is not one of its letters is rejected at load."""
    with pytest.raises(ValueError):
        item(answer="E", scoring="choice", choices=["a", "b"])


def test_normalize():
    """normalize lowercases, folds accents and drops punctuation."""
    assert normalize("  Héllo,  World! ") == "hello world"
