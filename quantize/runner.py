"""Run quantize/oneshot.py in the isolated llm-compressor venv (created by scripts/setup_quant.sh)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ONESHOT = Path(__file__).resolve().with_name("oneshot.py")
SETUP = REPO / "scripts" / "setup_quant.sh"


def quant_venv() -> Path:
    return Path(os.environ.get("QARR_QUANT_VENV", REPO / ".venv-quant"))


def ensure_venv(setup: bool = True) -> Path:
    """The venv's python; runs the (idempotent) setup script first when `setup`."""
    venv = quant_venv()
    if setup:
        subprocess.run(["bash", str(SETUP)], check=True, env={**os.environ, "QARR_QUANT_VENV": str(venv)})
    python = venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{venv} does not exist: run scripts/setup_quant.sh (or drop --no-setup)")
    return python


def run_oneshot(python: Path, base: Path, out: Path, scheme: str, calibration: Path, samples: int,
                seq_len: int, method: str = "rtn") -> dict:
    """llm-compressor's one-shot in a subprocess, its progress streamed to our stderr; returns its info."""
    with tempfile.TemporaryDirectory() as tmp:
        info_path = Path(tmp) / "info.json"
        cmd = [str(python), str(ONESHOT), "--base", str(base), "--out", str(out), "--scheme", scheme,
               "--calibration", str(calibration), "--samples", str(samples), "--seq-len", str(seq_len),
               "--method", method, "--info-out", str(info_path)]
        env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
        env.pop("PYTHONPATH", None)  # the serving env's paths must not leak into the quantize venv
        t0 = time.monotonic()
        proc = subprocess.run(cmd, env=env, stdout=sys.stderr, stderr=sys.stderr)
        if proc.returncode != 0:
            raise SystemExit(f"quantize: llm-compressor one-shot failed (exit {proc.returncode}); see its output above")
        info = json.loads(info_path.read_text())
        info["wall_s"] = round(time.monotonic() - t0, 1)
        return info
