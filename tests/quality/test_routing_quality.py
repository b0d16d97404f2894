"""RouteLLM-style routing metrics (bench/pgr.py) and the offline routing-quality benchmark on synthetic outcomes."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from bench.__main__ import main
from bench.pgr import Point, apgr, cpt, pgr, sweep
from profiler.outcomes import write_outcomes
from tests.quality import synthetic

# Four items: the strong tier alone answers 0 and 1, both answer 2, neither answers 3.
WEAK = [False, False, True, False]
STRONG = [True, True, True, False]


def test_a_router_that_cannot_tell_items_apart_is_random():
    """One score for every item moves all items as one tied group: the diagonal, APGR 0.5."""
    curve = sweep([0.3] * 4, WEAK, STRONG)
    assert curve == [Point(0.0, 0.25, 0.0), Point(1.0, 0.75, 0.0)]
    assert apgr(curve, 0.25, 0.75) == pytest.approx(0.5)
    assert cpt(curve, 0.25, 0.75, 0.5) == pytest.approx(0.5)


def test_perfect_scores_recover_the_gap_with_the_fewest_strong_calls():
    """Sending exactly the items only the strong tier answers first: PGR 1 at 50 % strong calls."""
    curve = sweep([1.0, 0.9, 0.1, 0.0], WEAK, STRONG, [1, 1, 1, 1], [3, 3, 3, 3])
    assert [(p.share, p.accuracy, p.cost) for p in curve] == [
        (0.0, 0.25, 1.0), (0.25, 0.5, 1.5), (0.5, 0.75, 2.0), (0.75, 0.75, 2.5), (1.0, 0.75, 3.0)]
    assert cpt(curve, 0.25, 0.75, 0.5) == pytest.approx(0.25)
    assert cpt(curve, 0.25, 0.75, 0.8) == pytest.approx(0.25 + 0.25 * 0.6)
    # PGR at shares 0, .25, .5, .75, 1 is 0, .5, 1, 1, 1: area .0625 + .1875 + .25 + .25
    assert apgr(curve, 0.25, 0.75) == pytest.approx(0.75)
    assert pgr(0.5, 0.25, 0.75) == 0.5


def test_reversed_scores_are_worse_than_random_and_no_gap_has_no_pgr():
    """Scores that prefer the wrong items give APGR below 0.5; equal tiers leave PGR undefined (nan)."""
    curve = sweep([0.0, 0.1, 0.9, 1.0], WEAK, STRONG)
    assert apgr(curve, 0.25, 0.75) < 0.5
    assert math.isnan(apgr(curve, 0.5, 0.5)) and math.isnan(cpt(curve, 0.5, 0.5, 0.5))
    with pytest.raises(ValueError):
        sweep([1.0], WEAK, STRONG)


def test_routing_quality_benchmark_on_synthetic_outcomes(tmp_path):
    """Offline benchmark: the learned router, scored only on held-out folds, recovers most of the gap on
    outcomes where the right tier follows from the text; random is 0.5 and the oracle is perfect."""
    train, unseen = synthetic.split(seed=5, per_kind=20)  # more capitals: b is the strong tier
    outcomes = synthetic.outcomes(train + unseen, noise=0.05, seed=5)
    write_outcomes(outcomes, tmp_path / "outcomes.jsonl")
    prof = {"ttft_ms_p50": 20, "decode_tps_c1": 100, "decode_tps_cn": 400, "concurrency_n": 8}
    (tmp_path / "profiles.yaml").write_text(yaml.safe_dump({"version": 1, "tiers": {
        "a": {**prof, "accuracy": 0.5, "cost_per_million_tokens": 1.0},
        "b": {**prof, "accuracy": 0.5, "cost_per_million_tokens": 2.0}}}))
    (tmp_path / "mesh.yaml").write_text(yaml.safe_dump({"tiers": [
        {"name": "a", "address": "127.0.0.1:1"}, {"name": "b", "address": "127.0.0.1:2"}]}))
    main(["routing-quality", "--out", str(tmp_path / "out"), "--outcomes", str(tmp_path / "outcomes.jsonl"),
          "--profiles", str(tmp_path / "profiles.yaml"), "--mesh", str(tmp_path / "mesh.yaml"), "--timing-runs", "1"])
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    stats = result["stats"]
    assert result["items"] == len(train) + len(unseen)
    assert stats["random"]["apgr"] == pytest.approx(0.5)
    assert stats["oracle"]["apgr"] > 0.9 and stats["oracle"]["accuracy"] > 90
    assert result["weak"] == "a" and result["strong"] == "b"
    assert stats["learned"]["apgr"] > 0.8 and stats["learned"]["cpt50"] < 0.6
    assert stats["learned"]["accuracy"] > max(stats["only a"]["accuracy"], stats["only b"]["accuracy"]) + 20
    assert stats["only a"]["share"] == {"a": 1.0} and stats["only a"]["cost_per_request"] < stats["only b"]["cost_per_request"]
    print("\n" + result["tables"]["routing_quality"]["markdown"])
    print(result["tables"]["predictor_cost"]["markdown"])
