"""The shipped golden set and calibration set: valid, large enough, sampled deterministically."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from profiler.evalset import DEFAULT_CALIBRATION_SET, DEFAULT_EVAL_SET, load_eval_set, sample
from profiler.scorer import score


def test_golden_set_loads_with_every_scoring_mode():
    """A few hundred items, every scoring mode present, unique ids."""
    items = load_eval_set(DEFAULT_EVAL_SET)
    assert len(items) >= 250
    assert set(Counter(i.scoring for i in items)) == {"exact", "contains", "numeric", "choice"}


def test_every_item_accepts_its_own_answer():
    """Each item scores its reference answer (the letter, or the answer text) as correct."""
    for it in load_eval_set(DEFAULT_EVAL_SET):
        assert score(it, it.answer), it.id


def test_golden_set_is_reproducible():
    """evals/build_golden.py regenerates exactly the shipped file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_golden", DEFAULT_EVAL_SET.with_name("build_golden.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    shipped = [json.loads(line) for line in DEFAULT_EVAL_SET.read_text().splitlines() if line.strip()]
    assert mod.build() == shipped


def test_sample_is_round_robin_over_categories_and_stable():
    """A limit takes items category by category in file order, the same every call."""
    items = load_eval_set(DEFAULT_EVAL_SET)
    first = sample(items, 12)
    assert [i.id for i in first] == [i.id for i in sample(items, 12)]
    assert len({i.category for i in first}) == len({i.category for i in items})
    assert sample(items, None) == items and sample(items, 10_000) == items


def test_user_eval_set_errors_name_the_line(tmp_path):
    """A user's own set is validated, and a bad line is reported with its number."""
    path = tmp_path / "mine.jsonl"
    path.write_text('{"id": "a", "prompt": "2+2?", "answer": "4", "scoring": "numeric"}\n'
                    '# comment\n{"id": "b", "prompt": "x", "answer": "four", "scoring": "numeric"}\n')
    with pytest.raises(ValueError, match="mine.jsonl:3"):
        load_eval_set(path)


def test_calibration_set_is_jsonl_of_text():
    """The calibration prompts are JSONL with a text field."""
    rows = [json.loads(line) for line in DEFAULT_CALIBRATION_SET.read_text().splitlines() if line.strip()]
    assert len(rows) >= 32 and all(r["text"].strip() for r in rows)
