"""Runs INSIDE .venv-quant (llm-compressor's environment), never in the serving env.

    .venv-quant/bin/python quantize/oneshot.py --base DIR --out DIR --scheme w8a8 \
        --calibration evals/calibration.jsonl --samples 32 --seq-len 256 --info-out info.json

Imports only the standard library and llm-compressor's stack, so it runs as a
plain script; `python -m quantize` starts it as a subprocess and writes the
manifest from the info it leaves in --info-out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def recipe_for(scheme: str, method: str):
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    int4_group32 = lambda symmetric: {  # noqa: E731
        "group_0": {
            "targets": ["Linear"],
            "weights": {"num_bits": 4, "type": "int", "symmetric": symmetric, "strategy": "group", "group_size": 32},
        }
    }
    if scheme == "w8a8":
        from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

        weights = (GPTQModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"]) if method == "gptq"
                   else QuantizationModifier(targets="Linear", scheme="W8A8", ignore=["lm_head"]))
        return [SmoothQuantModifier(smoothing_strength=0.8), weights]
    if scheme == "w4a16":
        # group 32: SmolLM2's hidden size 576 is not a multiple of the preset's 128.
        if method == "gptq":
            return [GPTQModifier(config_groups=int4_group32(True), ignore=["lm_head"])]
        return [QuantizationModifier(config_groups=int4_group32(True), ignore=["lm_head"])]
    if scheme == "awq":
        from llmcompressor.modifiers.transform.awq import AWQModifier

        return [AWQModifier(), QuantizationModifier(config_groups=int4_group32(False), ignore=["lm_head"])]
    if scheme == "fp8":
        return [QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC", ignore=["lm_head"])]
    raise SystemExit(f"unknown scheme {scheme}")


def describe(modifier) -> str:
    """A modifier as Name(non-default settings); the full recipe is llm-compressor's recipe.yaml beside it."""
    try:
        fields = modifier.model_dump(exclude_defaults=True, exclude_none=True)
    except Exception:
        return repr(modifier)
    fields = {k: v for k, v in fields.items() if not k.endswith("_")}
    return f"{type(modifier).__name__}({', '.join(f'{k}={v}' for k, v in fields.items())})"


def calibration_dataset(path: str, tokenizer, samples: int, seq_len: int):
    """The first `samples` prompts of a JSONL file ({"text"} or {"messages"}), chat-formatted and tokenized."""
    from datasets import Dataset

    rows = [json.loads(line) for line in open(path) if line.strip()]
    if not rows:
        raise SystemExit(f"{path}: no calibration prompts")
    rows = (rows * (samples // len(rows) + 1))[:samples]
    texts = []
    for row in rows:
        messages = row.get("messages") or [{"role": "user", "content": row["text"]}]
        if getattr(tokenizer, "chat_template", None):
            texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
        else:
            texts.append("\n".join(m["content"] for m in messages))
    enc = tokenizer(texts, max_length=seq_len, truncation=True, padding=False, add_special_tokens=False)
    return Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--scheme", required=True)
    p.add_argument("--calibration", required=True)
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--method", choices=["gptq", "rtn"], default="rtn")
    p.add_argument("--info-out", required=True)
    args = p.parse_args()

    t0 = time.monotonic()
    print(f"[quantize] loading {args.base}", file=sys.stderr, flush=True)
    import compressed_tensors
    import llmcompressor
    import torch
    import transformers
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(args.base, dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    recipe = recipe_for(args.scheme, args.method)
    kwargs = {}
    # SmoothQuant and AWQ calibrate whatever rounds the weights; GPTQ calibrates; RTN alone needs no data.
    if args.scheme in ("w8a8", "awq") or (args.method == "gptq" and args.scheme != "fp8"):
        # A separate tokenizer: calling one with truncation stores that setting in the tokenizer.json it saves,
        # and the served checkpoint would then cut every prompt to --seq-len tokens.
        calib_tokenizer = AutoTokenizer.from_pretrained(args.base)
        kwargs = dict(dataset=calibration_dataset(args.calibration, calib_tokenizer, args.samples, args.seq_len),
                      num_calibration_samples=args.samples, max_seq_length=args.seq_len,
                      shuffle_calibration_samples=False)
    print(f"[quantize] one-shot {args.scheme} ({args.method}): {args.samples} samples x {args.seq_len} tokens", file=sys.stderr,
          flush=True)
    oneshot(model=model, recipe=recipe, **kwargs)
    print(f"[quantize] saving compressed checkpoint to {args.out}", file=sys.stderr, flush=True)
    model.save_pretrained(args.out, save_compressed=True)
    tokenizer.save_pretrained(args.out)
    info = {
        "recipe": "; ".join(describe(m) for m in recipe),
        "libraries": {"llmcompressor": llmcompressor.__version__, "compressed-tensors": compressed_tensors.__version__,
                      "transformers": transformers.__version__, "torch": torch.__version__},
        "seconds": round(time.monotonic() - t0, 1),
    }
    with open(args.info_out, "w") as f:
        json.dump(info, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
