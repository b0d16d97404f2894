"""The profiler, on a user's own eval set over two fake tiers, writes every tier's outcome on every item
beside the profiles and trains the accuracy predictor the profiles then name."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from profiler.evalset import file_sha256
from profiler.outcomes import load_outcomes
from router.profiles import load_profiles
from tests.harness import REPO, free_port, subprocess_env


def test_profiler_writes_outcomes_and_a_predictor_for_a_users_eval_set(tmp_path):
    """outcomes.jsonl: one line per tier and item with correct, tokens, TTFT, latency and the eval set's
    sha256; predictor.json is named in the profiles and rates the items the tiers got right higher."""
    # The fake engine answers "alpha bravo charlie ...": items asking for alpha are right, zulu wrong.
    eval_set = tmp_path / "mine.jsonl"
    rows = [{"id": f"a{i}", "category": "easy", "prompt": f"Say alpha, please ({i}).", "answer": "alpha",
             "scoring": "contains"} for i in range(12)]
    rows += [{"id": f"z{i}", "category": "hard", "prompt": f"Spell zulu backwards ({i}).", "answer": "zulu",
              "scoring": "contains"} for i in range(12)]
    eval_set.write_text("".join(json.dumps(r) + "\n" for r in rows))
    serve = {"engine": "fake", "grace_seconds": 1}
    mesh = {"tiers": [{"name": n, "address": f"127.0.0.1:{free_port()}", "model": "fake", "quantization": q,
                       "serve": serve} for n, q in (("small", "w4a16"), ("large", "bf16"))]}
    (tmp_path / "mesh.yaml").write_text(yaml.safe_dump(mesh))
    out = tmp_path / "profiles" / "default.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "profiler", "--mesh", str(tmp_path / "mesh.yaml"), "--out", str(out),
         "--report", str(tmp_path / "profiles" / "REPORT.md"), "--eval-set", str(eval_set), "--ttft-requests", "2",
         "--decode-tokens", "4", "--concurrency", "2", "--prompt-tokens", "50", "--log-dir", str(tmp_path / "logs"),
         "--start-timeout", "60"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    outcomes = load_outcomes(out.parent / "outcomes.jsonl")
    assert len(outcomes) == 2 * len(rows)
    assert {(o.tier, o.item) for o in outcomes} == {(t, r["id"]) for t in ("small", "large") for r in rows}
    sha = file_sha256(eval_set)
    for o in outcomes:
        assert (o.eval_set, o.eval_set_sha256) == ("mine.jsonl", sha)
        assert o.correct == o.item.startswith("a")
        assert o.prompt_tokens > 0 and o.completion_tokens == 24 and 0 < o.ttft_ms <= o.latency_ms
        assert o.output.startswith("alpha")

    profiles = load_profiles(out)
    assert profiles.predictor == "predictor.json" and profiles.measured["outcomes"] == "outcomes.jsonl"
    predictor = profiles.accuracy_predictor
    assert predictor.eval_set_sha256 == sha and set(predictor.tiers) == {"small", "large"}
    easy, hard = predictor.predict("Say alpha, please (99)."), predictor.predict("Spell zulu backwards (99).")
    assert all(easy[t] > 0.7 > 0.3 > hard[t] for t in ("small", "large"))
