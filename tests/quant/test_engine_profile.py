"""`python -m profiler` on two real vLLM tiers: the bundled bf16 model and a copy with scrambled weights."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from profiler.outcomes import load_outcomes
from router.profiles import load_profiles

from tests.harness import REPO, free_port, subprocess_env

pytestmark = pytest.mark.engine


def run_terminating(cmd: list[str], timeout: float) -> subprocess.CompletedProcess:
    """subprocess.run, but a timeout sends SIGTERM first, so the profiler stops the tier it started."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=120)
        pytest.fail(f"profiler still running after {timeout:.0f} s:\n{err[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def scramble(src: Path, dst: Path) -> Path:
    """A copy of a model folder whose every weight tensor is Gaussian noise of the same scale."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst, symlinks=False)
    gen = torch.Generator().manual_seed(0)
    for path in dst.glob("*.safetensors"):
        tensors = load_file(path)
        noisy = {}
        for name, t in tensors.items():
            if t.is_floating_point():
                std = float(t.float().std()) if t.numel() > 1 else 1.0
                t = (torch.randn(t.shape, generator=gen) * (std or 1.0)).to(t.dtype)
            noisy[name] = t.contiguous()
        save_file(noisy, path, metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def profiled(bundled_model, tmp_path_factory):
    """Profiles + report from one profiler run over tiers bf16 and broken (started one at a time)."""
    tmp = tmp_path_factory.mktemp("profile")
    broken = scramble(bundled_model, tmp / "broken-model")
    serve = {"dtype": "bfloat16", "kv_cache_gib": 0.25, "grace_seconds": 2}
    mesh = {"listen": f"127.0.0.1:{free_port()}", "tiers": [
        {"name": "bf16", "address": f"127.0.0.1:{free_port()}", "model": str(bundled_model), "quantization": "bf16",
         "max_model_len": 1024, "serve": serve},
        {"name": "broken", "address": f"127.0.0.1:{free_port()}", "model": str(broken), "quantization": "bf16",
         "max_model_len": 1024, "serve": serve},
    ]}
    (tmp / "mesh.yaml").write_text(yaml.safe_dump(mesh))
    proc = run_terminating(
        [sys.executable, "-m", "profiler", "--mesh", str(tmp / "mesh.yaml"), "--out", str(tmp / "profiles.yaml"),
         "--report", str(tmp / "report" / "REPORT.md"), "--eval-limit", "24", "--ttft-requests", "3",
         "--decode-tokens", "24", "--concurrency", "4", "--prompt-tokens", "120", "--reference", "bf16",
         "--price-per-hour", "0.36", "--log-dir", str(tmp / "logs")],
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    print("\n" + proc.stdout)
    return tmp


def test_profiles_file_loads_in_the_router_with_plausible_numbers(profiled):
    """router.profiles.load_profiles reads the file; TTFT > 0, tok/s > 0, accuracy in [0, 1], memory > 0."""
    profiles = load_profiles(profiled / "profiles.yaml")
    assert set(profiles.tiers) == {"bf16", "broken"}
    assert profiles.measured["date"] and profiles.measured["machine"]
    for t in profiles.tiers.values():
        assert 0 < t.ttft_ms_p50 <= t.ttft_ms_p95 < 60_000
        assert 0 < t.decode_tps_c1 < 10_000 and 0 < t.decode_tps_cn < 100_000 and t.concurrency_n == 4
        assert 0 < t.prompt_tps
        assert 0 <= t.accuracy <= 1
        assert 100 << 20 < t.peak_memory_bytes < 64 << 30
        assert 1.0 < t.tokens_per_word < 3.0
        assert t.cost_per_million_tokens > 0
    assert profiles.tiers["bf16"].accuracy >= 0.1  # the golden set is easy enough for the bundled model


def test_scrambled_tier_is_caught_by_the_eval_gate(profiled):
    """The broken tier falls more than 10 points below bf16: routable false, with the numbers in the reason."""
    profiles = load_profiles(profiled / "profiles.yaml")
    assert profiles.tiers["bf16"].routable
    broken = profiles.tiers["broken"]
    assert not broken.routable
    assert "below reference bf16" in broken.not_routable_reason


def test_report_has_table_and_plots(profiled):
    """REPORT.md carries the date, machine and table; both PNG plots are written."""
    report = (profiled / "report" / "REPORT.md").read_text()
    assert "| bf16 |" in report and "| broken |" in report and "Measured **" in report
    for png in ("accuracy-vs-latency.png", "throughput-vs-concurrency.png"):
        assert (profiled / "report" / png).stat().st_size > 1000


def test_outcomes_and_predictor_are_written_beside_the_profiles(profiled):
    """Every tier's outcome on every eval item is in outcomes.jsonl, and the predictor trained from them loads
    with the profiles and rates the scrambled tier below the real one."""
    outcomes = load_outcomes(profiled / "outcomes.jsonl")
    assert len(outcomes) == 2 * 24 and {o.tier for o in outcomes} == {"bf16", "broken"}
    assert all(o.latency_ms >= o.ttft_ms > 0 and o.completion_tokens > 0 for o in outcomes)
    predictor = load_profiles(profiled / "profiles.yaml").accuracy_predictor
    assert predictor is not None and set(predictor.tiers) == {"bf16", "broken"}
    prompts = {o.item: o.prompt for o in outcomes}
    mean = lambda tier: sum(predictor.predict(p)[tier] for p in prompts.values()) / len(prompts)
    assert mean("broken") < mean("bf16")
