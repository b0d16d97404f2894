"""Each benchmark runs end to end with tiny sizes on fake tiers (seconds, no real engine)."""

from __future__ import annotations

import json

import yaml

from bench.__main__ import main
from bench.harness import fit_line, rotated, table
from profiler.evalset import file_sha256
from profiler.outcomes import Outcome, examples, load_outcomes, write_outcomes
from profiler.stats import percentile
from profiler.train import folds_of


def _result(out) -> dict:
    return json.loads((out / "result.json").read_text())


def test_overhead_smoke(tmp_path):
    """overhead measures direct, router and relay arms, instant and paced, and reports added TTFT."""
    main(["overhead", "--out", str(tmp_path), "--concurrency", "1", "2", "--requests", "6", "--rounds", "2",
          "--max-tokens", "4", "--paced-streams", "4", "--paced-requests", "4", "--paced-rounds", "1", "--paced-ms", "2", "--warmup", "2"])
    r = _result(tmp_path)
    assert set(r["cases"]) == {"instant c=1", "instant c=2", "paced 2 ms c=4"}
    for case in r["cases"].values():
        assert case["router"]["errors"] == {} and case["relay"]["errors"] == {}
        assert case["router"]["ttft"]["n"] > 0
        assert "p99" in case["router"]["added_ttft_ms"]


def test_cost_smoke(tmp_path):
    """cost fits per-request and per-chunk CPU for router and relay and measures throughput."""
    main(["cost", "--out", str(tmp_path), "--chunks", "1", "8", "--stream-chunks", "40", "--rounds", "1",
          "--tp-requests", "40", "--tp-rounds", "1", "--tp-concurrency", "4", "--profile-seconds", "0", "--warmup", "4"])
    r = _result(tmp_path)
    assert set(r["fits"]) == {"router", "relay"}
    assert all(run["completed"] == 40 for arm in r["throughput"].values() for run in arm)


def test_scaling_smoke(tmp_path):
    """scaling opens N streams through fresh proxies and reports memory per stream without errors."""
    main(["scaling", "--out", str(tmp_path), "--streams", "8", "--token-ms", "100", "--max-tokens", "3",
          "--ramp-s", "0", "--warmup", "2"])
    s = _result(tmp_path)["summary"]["8"]
    assert s["router"]["errors"] == 0 and s["router"]["completed"] == 8
    assert s["router"]["kb_peak"] == s["router"]["kb_peak"]  # a number, not nan


def test_bench_meshes_are_valid_mesh_files():
    """Every mesh file under bench/meshes/ is read by load_mesh (no bench-only fields)."""
    from launcher.process import REPO
    from mesh.config import load_mesh

    meshes = sorted((REPO / "bench/meshes").glob("*.yaml"))
    assert meshes
    for path in meshes:
        assert load_mesh(path).tiers


def test_routing_smoke(tmp_path):
    """routing runs pinned and routed arms over a fake two-tier mesh, the routed one with a predictor trained on
    the outcomes outside the held-out fold, and serves only held-out items."""
    rows = [{"id": f"q{i}", "category": "c", "prompt": f"Say alpha ({i}).", "answer": "alpha", "scoring": "contains"}
            for i in range(30)]
    eval_set = tmp_path / "mine.jsonl"
    eval_set.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sha = file_sha256(eval_set)
    write_outcomes([Outcome(tier=t, item=r["id"], prompt=r["prompt"], correct=t == "big" or i % 2 == 0,
                            prompt_tokens=5, completion_tokens=3, ttft_ms=1, latency_ms=2, eval_set="mine.jsonl",
                            eval_set_sha256=sha) for i, r in enumerate(rows) for t in ("big", "small")],
                   tmp_path / "outcomes.jsonl")
    prof = {"ttft_ms_p50": 5, "decode_tps_c1": 100, "cost_per_million_tokens": 1.0}
    (tmp_path / "profiles.yaml").write_text(yaml.safe_dump({
        "version": 1, "measured": {"eval_set": f"mine.jsonl sha256:{sha[:16]}"},
        "tiers": {"big": {**prof, "accuracy": 1.0}, "small": {**prof, "accuracy": 0.5}}}))
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text(
        "tiers:\n"
        "  - {name: big, address: '127.0.0.1:0', model: fake, quantization: bf16, serve: {engine: fake}}\n"
        "  - {name: small, address: '127.0.0.1:0', model: fake, quantization: w4a16, serve: {engine: fake}}\n"
    )
    main(["routing", "--out", str(tmp_path / "out"), "--mesh", str(mesh), "--rate", "50", "--requests", "6",
          "--rounds", "1", "--max-tokens", "3", "--eval-set", str(eval_set), "--profiles", str(tmp_path / "profiles.yaml")])
    result = _result(tmp_path / "out")
    stats = result["stats"]
    assert result["precise"] == "big" and result["routed_arm"].startswith("learned predictor")
    assert stats["pinned"]["completed"] == 6 and stats["pinned"]["tiers"] == {"big": 6}
    assert stats["routed"]["completed"] == 6
    assert "p95_ratio" in stats["routed_vs_pinned"]
    held_out = {e.item for e in examples(load_outcomes(tmp_path / "outcomes.jsonl"))
                if folds_of([f"q{i}" for i in range(30)], 5)[int(e.item[1:])] == 0}
    assert {x["item"] for arm in ("pinned", "routed") for x in result["results"][arm]} <= held_out


def test_helpers():
    """Percentiles, the least-squares line, arm rotation and tables behave."""
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    a, b = fit_line([1, 2, 3], [3, 5, 7])
    assert abs(a - 1) < 1e-9 and abs(b - 2) < 1e-9
    assert rotated(["a", "b", "c"], 1) == ["b", "c", "a"]
    assert table(["x", "y"], [["a", 1.0]]).count("\n") == 2


def test_workers_smoke(tmp_path):
    """workers runs --workers 1 and 2 against a fake tier over several connections and reports streams/s for both."""
    main(["workers", "--out", str(tmp_path), "--rounds", "1", "--requests", "40", "--concurrency", "4",
          "--connections", "2", "--loadgens", "1", "--chunks", "4", "--warmup", "4"])
    runs = _result(tmp_path)["runs"]
    assert set(runs) == {"1", "2"}
    assert all(r["completed"] == 40 and not r["errors"] and r["streams_per_s"] > 0 for arm in runs.values() for r in arm)


def test_http_smoke(tmp_path):
    """http measures the gRPC path and the HTTP door against a direct call, with CPU per request (LiteLLM left out:
    its install takes minutes)."""
    # 50 requests an arm: CPU time comes from /proc in 10 ms ticks, and 8 requests of the door (~3 ms each)
    # could read as 0 ticks.
    main(["http", "--out", str(tmp_path), "--requests", "25", "--rounds", "2", "--warmup", "2", "--max-tokens", "3",
          "--no-litellm"])
    stats = _result(tmp_path)["stats"]
    assert set(stats) == {"direct-grpc", "qarr-grpc", "qarr-http"}
    for arm in stats.values():
        assert arm["completed"] == 50 and arm["errors"] == {}
    assert stats["qarr-http"]["cpu_ms_per_request"] > 0 and "added_ttft_p50_ms" in stats["qarr-http"]


def test_affinity_smoke(tmp_path):
    """affinity runs both routers over two fake replicas: with affinity every follow-up returns to its first replica."""
    main(["affinity", "--out", str(tmp_path), "--engine", "fake", "--conversations", "4", "--prefix-tokens", "50",
          "--max-tokens", "2"])
    stats = _result(tmp_path)["stats"]
    assert set(stats) == {"affinity", "no-affinity"}
    assert stats["affinity"]["same_replica"] == 1.0
    assert stats["no-affinity"]["follow_up"]["n"] == 4
