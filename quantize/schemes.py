"""The quantization schemes `qarr quantize` offers, and what each needs (calibration, a GPU)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scheme:
    name: str
    label: str  # the tier's quantization label (mesh files, profiles)
    description: str
    calibrated: bool  # uses the calibration set whatever the method (SmoothQuant, AWQ)
    gpu_only: bool
    gpu_reason: str = ""

    def uses_calibration(self, method: str) -> bool:
        return self.calibrated or (method == "gptq" and self.name != "fp8")


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme("w8a8", "w8a8", "int8 weights and activations: SmoothQuant (0.8, calibrated) + RTN or GPTQ, per-channel weights, "
               "dynamic per-token activations (vLLM CPU int8 kernel)", calibrated=True, gpu_only=False),
        Scheme("w4a16", "w4a16", "int4 weights (group 32, symmetric), 16-bit activations: RTN or GPTQ (vLLM CPU WNA16 kernel)",
               calibrated=False, gpu_only=False),
        Scheme("awq", "awq", "int4 weights (group 32, asymmetric) with AWQ scaling", calibrated=True, gpu_only=True,
               gpu_reason="AWQ's activation-aware search is meant for a GPU (hours on a CPU for real models) and "
                          "its asymmetric int4 checkpoints are served by vLLM's GPU kernels; use w4a16 on a CPU"),
        Scheme("fp8", "fp8", "fp8 weights and dynamic fp8 activations (no calibration)", calibrated=False, gpu_only=True,
               gpu_reason="fp8 needs GPU tensor cores (Hopper/Ada); on a CPU vLLM only emulates it "
                          "(~2 tok/s measured here, and per-tensor fp8 fails to load); use w8a8 on a CPU"),
    )
}


class SchemeError(Exception):
    """A scheme that cannot run here; the message says why and what to use instead."""


def check_scheme(name: str, has_gpu: bool, force: bool = False) -> Scheme:
    """The scheme, or SchemeError with a clear message (unknown name, GPU-only scheme without a GPU)."""
    if name not in SCHEMES:
        raise SchemeError(f"unknown scheme {name!r}; known: {', '.join(SCHEMES)}")
    scheme = SCHEMES[name]
    if scheme.gpu_only and not has_gpu and not force:
        raise SchemeError(f"scheme {name} needs an NVIDIA GPU and none was found (nvidia-smi): {scheme.gpu_reason}. "
                          "--force tries anyway.")
    return scheme
