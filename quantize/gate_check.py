"""`qarr quantize --gate`: serve the base and the quantized model in turn, score both, apply the eval gate."""

from __future__ import annotations

import json
from pathlib import Path

from launcher.process import free_port
from profiler.evalset import load_eval_set, sample
from profiler.gate import GateResult, apply_gate
from profiler.run import ProfileSettings, _progress, measure_tier
from mesh.config import ServeConfig, TierSpec


def _spec(name: str, model: Path, label: str, dtype: str, max_model_len: int, kv_cache_gib: float) -> TierSpec:
    address = f"127.0.0.1:{free_port()}"
    return TierSpec(name=name, address=address, model=str(model), quantization=label, max_model_len=max_model_len,
                    serve=ServeConfig(dtype=dtype, kv_cache_gib=kv_cache_gib))


def gate_quantized(base: Path, quantized: Path, label: str, eval_set: Path, eval_limit: int | None,
                   max_drop_points: float, log_dir: Path, max_model_len: int = 1024,
                   kv_cache_gib: float = 0.25) -> GateResult:
    """Accuracy of base (bf16) and quantized tiers on the same items; the quantized tier's gate result.

    Writes gate.json (accuracies, the answers) beside the quantized weights.
    """
    settings = ProfileSettings(eval_set=eval_set, eval_limit=eval_limit, log_dir=log_dir)
    items = sample(load_eval_set(eval_set), eval_limit)
    specs = [_spec("base", base, "bf16", "bfloat16", max_model_len, kv_cache_gib),
             _spec("quantized", quantized, label, "bfloat16", max_model_len, kv_cache_gib)]
    with _progress() as progress:
        results = {s.name: measure_tier(s, items, settings, progress, speed=False) for s in specs}
    gate = apply_gate({n: r.evals.accuracy for n, r in results.items()}, "base", max_drop_points)["quantized"]
    (quantized / "gate.json").write_text(json.dumps({
        "eval_set": str(eval_set), "items": len(items), "max_drop_points": max_drop_points,
        "accuracy": {n: r.evals.accuracy for n, r in results.items()},
        "drop_points": gate.drop_points, "passed": gate.passed,
        "answers": {n: r.evals.answers for n, r in results.items()},
    }, indent=2) + "\n")
    return gate
