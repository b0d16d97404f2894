"""Is there an NVIDIA GPU here? (nvidia-smi lists one.)"""

from __future__ import annotations

import os
import shutil
import subprocess


def has_gpu() -> bool:
    if os.environ.get("QARR_NO_GPU") == "1":
        return False
    if not shutil.which("nvidia-smi"):
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout
