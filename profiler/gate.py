"""The eval gate: a tier whose accuracy falls too far below the reference tier is not routable."""

from __future__ import annotations

from dataclasses import dataclass

# Most precise first: the default reference is the routable tier whose label ranks highest here.
PRECISION_ORDER = ("fp32", "float32", "bf16", "bfloat16", "fp16", "float16", "fp8", "w8a8", "int8", "w8a16",
                   "awq", "w4a16", "gptq", "int4")


def precision_rank(label: str) -> int:
    label = label.lower()
    for rank, name in enumerate(PRECISION_ORDER):
        if name in label:
            return rank
    return len(PRECISION_ORDER)


def default_reference(labels: dict[str, str]) -> str:
    """The most precise tier by its quantization label (ties: first in mesh order)."""
    if not labels:
        raise ValueError("no tiers")
    return min(labels, key=lambda name: (precision_rank(labels[name]), list(labels).index(name)))


@dataclass(frozen=True)
class GateResult:
    tier: str
    accuracy: float
    reference: str
    reference_accuracy: float
    max_drop_points: float

    @property
    def drop_points(self) -> float:
        return round((self.reference_accuracy - self.accuracy) * 100, 2)

    @property
    def passed(self) -> bool:
        return self.drop_points <= self.max_drop_points

    @property
    def reason(self) -> str:
        if self.passed:
            return ""
        return (f"eval gate: accuracy {self.accuracy:.3f} is {self.drop_points:.1f} points below reference "
                f"{self.reference} ({self.reference_accuracy:.3f}); allowed {self.max_drop_points:g}")


def apply_gate(accuracy: dict[str, float], reference: str, max_drop_points: float) -> dict[str, GateResult]:
    """Gate every tier against `reference` (accuracies in [0, 1]; the allowance in percentage points)."""
    if reference not in accuracy:
        raise ValueError(f"reference tier {reference!r} was not measured (tiers: {', '.join(accuracy)})")
    ref = accuracy[reference]
    return {name: GateResult(name, acc, reference, ref, max_drop_points) for name, acc in accuracy.items()}
