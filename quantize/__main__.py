"""python -m quantize --base DIR --scheme w8a8 [--gate]  — a quantized checkpoint vLLM loads (see --help).

llm-compressor runs in its own venv (.venv-quant, made by scripts/setup_quant.sh),
so the serving env keeps vLLM's pins. The output folder carries qarr-quant.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import signal
import sys
import time
from pathlib import Path

from profiler.evalset import DEFAULT_CALIBRATION_SET, DEFAULT_EVAL_SET, file_sha256
from profiler.run import machine_description
from quantize.hardware import has_gpu
from quantize.manifest import Calibration, Manifest, folder_sha256, write_manifest
from quantize.runner import ensure_venv, run_oneshot
from quantize.schemes import SCHEMES, SchemeError, check_scheme


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="qarr-quantize", description=__doc__.splitlines()[0])
    p.add_argument("--base", type=Path, default=Path(".cache/models/smollm2-135m-instruct"),
                   help="base model folder (safetensors; default %(default)s)")
    p.add_argument("--scheme", choices=list(SCHEMES), default="w8a8",
                   help="; ".join(f"{s.name}: {s.description}{' [GPU only]' if s.gpu_only else ''}"
                                  for s in SCHEMES.values()))
    p.add_argument("--out", type=Path, help="output folder (default: beside the base, NAME-SCHEME)")
    p.add_argument("--calibration", type=Path, default=DEFAULT_CALIBRATION_SET,
                   help="calibration prompts, JSONL of {text} or {messages} (default %(default)s)")
    p.add_argument("--samples", type=int, default=32, help="calibration samples (default %(default)s)")
    p.add_argument("--seq-len", type=int, default=256, help="calibration sequence length (default %(default)s)")
    p.add_argument("--method", choices=["rtn", "gptq"], default="rtn",
                   help="weight rounding: rtn (round to nearest; w8a8 still calibrates SmoothQuant) or gptq "
                        "(calibrated, better at 4 bits, slow on a CPU: 25+ min for SmolLM2 here; default %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--force", action="store_true", help="try a GPU-only scheme without a GPU")
    p.add_argument("--no-setup", action="store_true", help="do not run scripts/setup_quant.sh first")
    g = p.add_argument_group("eval gate (after quantizing)")
    g.add_argument("--gate", action="store_true",
                   help="serve base and result, score both on the eval set; exit 3 when the result drops too far")
    g.add_argument("--gate-points", type=float, default=10.0,
                   help="largest allowed accuracy drop, in percentage points (default %(default)s)")
    g.add_argument("--eval-set", type=Path, default=DEFAULT_EVAL_SET, help="JSONL eval set (default %(default)s)")
    g.add_argument("--eval-limit", type=int, default=60, help="eval items (0 = all; default %(default)s)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the tier servers this command started are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        scheme = check_scheme(args.scheme, has_gpu(), force=args.force)
    except SchemeError as exc:
        print(f"qarr quantize: {exc}", file=sys.stderr)
        return 2
    base = args.base.resolve()
    if not (base / "config.json").exists():
        print(f"qarr quantize: {base} is not a model folder (no config.json)", file=sys.stderr)
        return 2
    out = (args.out or base.with_name(f"{base.name}-{scheme.name}")).resolve()
    if out.exists():
        if not args.overwrite:
            print(f"qarr quantize: {out} exists (--overwrite replaces it)", file=sys.stderr)
            return 2
        shutil.rmtree(out)

    t0 = time.monotonic()
    python = ensure_venv(setup=not args.no_setup)
    print(f"quantize: {base.name} -> {scheme.name} ({scheme.description}) into {out}", file=sys.stderr)
    info = run_oneshot(python, base, out, scheme.name, args.calibration, args.samples, args.seq_len, args.method)
    for extra in ("generation_config.json", "chat_template.jinja"):
        if (base / extra).exists() and not (out / extra).exists():
            shutil.copy2(base / extra, out / extra)
    manifest = Manifest(
        base_model=str(base),
        base_model_sha256=folder_sha256(base),
        scheme=scheme.name,
        method=args.method,
        label=scheme.label,
        recipe=info["recipe"],
        calibration=Calibration(path=str(args.calibration), sha256=file_sha256(args.calibration),
                                samples=args.samples, seq_len=args.seq_len)
        if scheme.uses_calibration(args.method) else None,
        libraries=info["libraries"],
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        duration_s=info["wall_s"],
        machine=machine_description(),
    )
    write_manifest(out, manifest)
    print(f"quantize: done in {time.monotonic() - t0:.0f} s (one-shot {info['wall_s']:.0f} s); manifest "
          f"{out / 'qarr-quant.json'}", file=sys.stderr)

    if args.gate:
        from quantize.gate_check import gate_quantized

        result = gate_quantized(base, out, scheme.label, args.eval_set, args.eval_limit or None, args.gate_points,
                                log_dir=out.parent / f".{out.name}-gate-logs")
        verdict = "PASS" if result.passed else "FAIL"
        print(f"eval gate {verdict}: {scheme.name} accuracy {result.accuracy:.3f} vs base {result.reference_accuracy:.3f} "
              f"({result.drop_points:+.1f} points drop, allowed {args.gate_points:g})", file=sys.stderr)
        if not result.passed:
            return 3
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
