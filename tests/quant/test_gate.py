"""The eval gate and the profiles it produces: pure logic, no engine."""

from __future__ import annotations

import pytest

from profiler.evalset import EvalItem
from profiler.evaluate import EvalResult, ItemResult
from profiler.gate import apply_gate, default_reference
from profiler.measure import Completion, Speed
from profiler.run import ProfileSettings, TierMeasurement, build_profiles
from mesh.config import TierSpec
from router.profiles import dump_profiles, load_profiles


def test_default_reference_is_the_most_precise_label():
    """fp32 beats bf16 beats w8a8 beats w4a16; unknown labels rank last."""
    assert default_reference({"a": "w8a8", "b": "bf16", "c": "fp32"}) == "c"
    assert default_reference({"q": "w4a16", "h": "bf16"}) == "h"
    assert default_reference({"x": "mystery", "y": "w8a8"}) == "y"


def test_gate_blocks_a_drop_beyond_the_allowance():
    """More than the allowed points below the reference -> not passed, with the numbers in the reason."""
    res = apply_gate({"bf16": 0.40, "w8a8": 0.35, "broken": 0.02}, "bf16", 10)
    assert res["bf16"].passed and res["w8a8"].passed
    assert not res["broken"].passed
    assert res["broken"].drop_points == 38.0
    assert "0.020" in res["broken"].reason and "bf16" in res["broken"].reason and "38.0" in res["broken"].reason


def test_gate_allows_exactly_the_allowance_and_better_than_reference():
    """A drop equal to the allowance passes; a tier above the reference passes."""
    res = apply_gate({"ref": 0.5, "edge": 0.4, "better": 0.6}, "ref", 10)
    assert res["edge"].passed and res["better"].passed


def test_gate_needs_a_measured_reference():
    """Naming a reference that was not measured is an error, not a silent pass."""
    with pytest.raises(ValueError):
        apply_gate({"a": 0.5}, "b", 10)


def _results(*correct: tuple[str, str, bool]) -> EvalResult:
    """(item id, category, correct) per item."""
    done = Completion(text="x", ttft_s=0.05, total_s=0.2, prompt_tokens=10, completion_tokens=3)
    return EvalResult([ItemResult(EvalItem(id=i, prompt="p", answer="a", scoring="exact", category=c), done, ok)
                       for i, c, ok in correct])


def _measurement(name: str, label: str, acc: float) -> TierMeasurement:
    evals = _results(*((str(i), "x", i < int(acc * 100)) for i in range(100)))
    speed = Speed(ttft_ms_p50=50, ttft_ms_p95=80, decode_tps_c1=50, decode_tps_by_concurrency={1: 45, 8: 250},
                  prompt_tps=900)
    return TierMeasurement(spec=TierSpec(name=name, address="127.0.0.1:1", model="m", quantization=label), speed=speed,
                           peak_memory_bytes=3 << 30, evals=evals, tokens_per_word=1.4)


def test_build_profiles_marks_gated_tier_not_routable_and_router_loads_it(tmp_path):
    """build_profiles applies the gate; the file round-trips through router.profiles."""
    s = ProfileSettings(price_per_hour=0.36, gate_points=10)
    profiles = build_profiles([_measurement("fp32", "fp32", 0.40), _measurement("broken", "w8a8", 0.05)], s, 100)
    assert profiles.measured["reference_tier"] == "fp32"
    assert profiles.tiers["fp32"].routable
    assert not profiles.tiers["broken"].routable and "35.0 points" in profiles.tiers["broken"].not_routable_reason
    assert profiles.tiers["fp32"].cost_per_million_tokens == pytest.approx(0.36 / (250 * 3600) * 1e6, rel=1e-3)
    assert profiles.tiers["fp32"].decode_tps_cn == 250 and profiles.tiers["fp32"].concurrency_n == 8
    dump_profiles(profiles, tmp_path / "p.yaml")
    loaded = load_profiles(tmp_path / "p.yaml")
    assert loaded.tiers["broken"].routable is False and loaded.measured["date"]


def test_eval_result_by_category():
    """Per-category accuracy over the items answered; totals, wrong ids and answers agree with the items."""
    r = _results(("1", "x", True), ("2", "x", False), ("3", "y", True))
    assert r.by_category() == {"x": 0.5, "y": 1.0}
    assert (r.correct, r.total, r.wrong, r.answers["2"]) == (2, 3, ["2"], "x")
