"""Real quantization (llm-compressor in .venv-quant) of the bundled model, served by a real vLLM tier."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import grpc
import pytest

from profiler.measure import complete
from qarr.v1 import tier_service_pb2_grpc
from quantize.manifest import read_manifest

from tests.harness import REPO, start_tier_process, subprocess_env

pytestmark = pytest.mark.engine


@pytest.fixture(scope="session")
def quant_venv() -> None:
    """The isolated llm-compressor venv, created by scripts/setup_quant.sh (a no-op once its stamp exists)."""
    subprocess.run(["bash", str(REPO / "scripts/setup_quant.sh")], check=True, timeout=1200)


@pytest.fixture(scope="session")
def w8a8_model(quant_venv, bundled_model, tmp_path_factory):
    """SmolLM2 quantized to W8A8 int8 with a tiny calibration set (8 prompts x 64 tokens)."""
    out = tmp_path_factory.mktemp("quant") / "smollm2-w8a8"
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "quantize", "--base", str(bundled_model), "--scheme", "w8a8", "--out", str(out),
         "--samples", "8", "--seq-len", "64", "--no-setup"],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"\nW8A8 quantize took {time.monotonic() - t0:.0f} s")
    return out


def test_w8a8_checkpoint_carries_manifest_and_compressed_tensors_config(w8a8_model, bundled_model):
    """The output is a compressed-tensors checkpoint with a manifest naming base, scheme, calibration, versions."""
    m = read_manifest(w8a8_model)
    assert m.scheme == "w8a8" and m.base_model == str(bundled_model.resolve())
    assert m.calibration and m.calibration.samples == 8 and m.calibration.seq_len == 64 and len(m.calibration.sha256) == 64
    assert m.libraries["llmcompressor"] == "0.14.0.1" and "compressed-tensors" in m.libraries
    # Calibration tokenizes with truncation; the saved tokenizer must not keep it (it would cut served prompts).
    assert json.loads((w8a8_model / "tokenizer.json").read_text())["truncation"] is None
    qcfg = json.loads((w8a8_model / "config.json").read_text())["quantization_config"]
    assert qcfg["quant_method"] == "compressed-tensors"
    weights = qcfg["config_groups"]["group_0"]["weights"]
    assert weights["num_bits"] == 8 and weights["type"] == "int"


def test_w8a8_loads_in_a_real_tier_and_answers(w8a8_model, tmp_path):
    """`python -m tier_server --model <w8a8>` reaches SERVING and streams a non-empty greedy answer."""
    log = tmp_path / "w8a8.log"
    proc = start_tier_process(
        "w8a8", "--model", str(w8a8_model), "--dtype", "bfloat16", "--quantization", "w8a8",
        "--max-model-len", "512", "--kv-cache-gib", "0.25", "--grace-seconds", "2", log=log,
    )
    try:
        try:
            proc.wait_serving(timeout=300)
        except Exception:
            pytest.fail(f"w8a8 tier did not start; log:\n{log.read_text()[-4000:]}")

        async def ask():
            async with grpc.aio.insecure_channel(proc.address) as channel:
                return await complete(tier_service_pb2_grpc.TierServiceStub(channel),
                                      "What is the capital of France?", max_tokens=24)

        c = asyncio.run(ask())
        print(f"\nw8a8 answer: {c.text!r}")
        assert c.text.strip() and c.completion_tokens > 0 and c.prompt_tokens > 0
    finally:
        proc.stop()
