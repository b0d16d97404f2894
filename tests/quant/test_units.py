"""Quantize and profiler helpers without an engine: schemes, manifest, cost, memory, percentiles."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from profiler.cost import cost_per_million_tokens
from profiler.measure import Completion
from profiler.memory import PeakMemorySampler, process_tree, tree_rss_bytes
from profiler.stats import percentile
from quantize.manifest import Calibration, Manifest, folder_sha256, read_manifest, write_manifest
from quantize.schemes import SCHEMES, SchemeError, check_scheme

from tests.harness import REPO, subprocess_env


def test_gpu_only_scheme_without_gpu_fails_clearly():
    """fp8 and awq without a GPU: SchemeError that names the reason and the CPU alternative."""
    for name, alt in (("fp8", "w8a8"), ("awq", "w4a16")):
        with pytest.raises(SchemeError, match=f"needs an NVIDIA GPU.*use {alt}"):
            check_scheme(name, has_gpu=False)
        assert check_scheme(name, has_gpu=True).name == name
        assert check_scheme(name, has_gpu=False, force=True).name == name


def test_cpu_schemes_and_unknown():
    """w8a8 and w4a16 run on a CPU; an unknown scheme lists the known ones."""
    assert not SCHEMES["w8a8"].gpu_only and not SCHEMES["w4a16"].gpu_only
    with pytest.raises(SchemeError, match="known: w8a8"):
        check_scheme("int3", has_gpu=False)


def test_cli_exits_2_with_message_for_fp8_without_gpu(tmp_path):
    """`python -m quantize --scheme fp8` on a machine without GPU exits 2 before installing anything."""
    proc = subprocess.run([sys.executable, "-m", "quantize", "--scheme", "fp8", "--out", str(tmp_path / "x")],
                          cwd=REPO, env=subprocess_env(QARR_NO_GPU="1"), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "needs an NVIDIA GPU" in proc.stderr


def test_manifest_round_trip_and_folder_hash(tmp_path):
    """The manifest written beside the weights reads back equal; the folder hash follows the weights."""
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    h1 = folder_sha256(tmp_path)
    m = Manifest(base_model="/m", base_model_sha256=h1, scheme="w8a8", label="w8a8", recipe="r",
                 calibration=Calibration(path="c.jsonl", sha256="00", samples=8, seq_len=64),
                 libraries={"llmcompressor": "0.14.0.1"}, created="2026-11-23T00:00:00+00:00", duration_s=1.0)
    write_manifest(tmp_path, m)
    assert read_manifest(tmp_path) == m
    (tmp_path / "model.safetensors").write_bytes(b"abd")
    assert folder_sha256(tmp_path) != h1


def test_cost_per_million_tokens():
    """$/hour over tokens/hour, per million; zero throughput is infinitely expensive unless free."""
    assert cost_per_million_tokens(3.6, 1000) == pytest.approx(1.0)
    assert cost_per_million_tokens(0, 0) == 0.0
    assert cost_per_million_tokens(1, 0) == float("inf")


def test_percentile_and_decode_rate():
    """Linear-interpolated percentiles; decode rate excludes the first token."""
    assert percentile([10, 20, 30, 40, 50], 50) == 30
    assert percentile([10, 20], 95) == pytest.approx(19.5)
    assert math.isnan(percentile([], 50))  # no data is not a zero
    c = Completion(text="x", ttft_s=0.1, total_s=1.1, prompt_tokens=5, completion_tokens=11)
    assert c.decode_tps == pytest.approx(10.0)
    assert Completion("x", 0.5, 0.5, 5, 1).decode_tps == pytest.approx(2.0)


def test_memory_sampler_sees_a_child_process():
    """The process tree includes children, and the sampler's peak covers their RSS."""
    child = subprocess.Popen([sys.executable, "-c", "x = bytearray(64 << 20); import time; time.sleep(60)"])
    try:
        import time

        deadline = time.monotonic() + 30
        while tree_rss_bytes(child.pid) < 64 << 20:  # wait for the allocation, however loaded the machine
            assert time.monotonic() < deadline, "child never reached 64 MiB"
            time.sleep(0.05)
        assert child.pid in process_tree(os.getpid())
        with PeakMemorySampler(os.getpid(), interval_s=0.05) as mem:
            time.sleep(0.2)
        assert mem.peak_bytes >= tree_rss_bytes(child.pid) >= 64 << 20
    finally:
        child.kill()
        child.wait()


def test_tokens_per_word_ignores_a_saved_truncation(tmp_path, bundled_model):
    """tokens/word of the bundled tokenizer is ~1.5, also when its tokenizer.json carries a truncation setting."""
    import json

    from profiler.tokens import tokens_per_word

    tpw = tokens_per_word(bundled_model)
    assert 1.1 < tpw < 2.0
    data = json.loads((bundled_model / "tokenizer.json").read_text())
    data["truncation"] = {"direction": "Right", "max_length": 64, "strategy": "LongestFirst", "stride": 0}
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    assert tokens_per_word(tmp_path) == pytest.approx(tpw)
