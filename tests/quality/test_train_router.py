"""`qarr train-router`: trains the predictor from an outcomes file alone and names it in the profiles."""

from __future__ import annotations

import yaml

from clients.cli import main as qarr
from profiler.outcomes import write_outcomes
from router.profiles import load_profiles
from tests.quality import synthetic


def test_train_router_writes_and_links_a_predictor_the_router_loads(tmp_path, capsys):
    """Outcomes beside the profiles -> predictor.json beside them, named in the profiles file, loadable."""
    train, _ = synthetic.split(seed=1)
    write_outcomes(synthetic.outcomes(train), tmp_path / "outcomes.jsonl")
    profiles = tmp_path / "default.yaml"
    profiles.write_text(yaml.safe_dump({"version": 1, "measured": {"eval_set": f"synthetic.jsonl sha256:{synthetic.SHA[:16]}"},
                                        "tiers": {"a": {"ttft_ms_p50": 5, "decode_tps_c1": 50, "accuracy": 0.5}}}))
    assert qarr(["train-router", "--profiles", str(profiles)]) == 0
    assert "named in" in capsys.readouterr().out
    loaded = load_profiles(profiles)
    assert loaded.predictor == "predictor.json" and loaded.tiers["a"].accuracy == 0.5
    assert loaded.accuracy_predictor.tiers == ("a", "b")
    assert loaded.accuracy_predictor.predict("What is the capital of Chile?")["b"] > 0.5


def test_train_router_refuses_too_few_items_with_a_clear_error(tmp_path, capsys):
    """Fewer eval items than training needs: exit 1 with the counts, and the profiles file is left alone."""
    write_outcomes(synthetic.outcomes([("capitals", synthetic.capital("Peru"))] * 1), tmp_path / "outcomes.jsonl")
    profiles = tmp_path / "default.yaml"
    profiles.write_text("version: 1\ntiers: {}\n")
    assert qarr(["train-router", "--profiles", str(profiles)]) == 1
    assert "training needs at least" in capsys.readouterr().err
    assert load_profiles(profiles).predictor == ""
