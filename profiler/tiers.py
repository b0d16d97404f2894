"""Tiers to profile: read from a mesh file (the profiler starts them through launcher/process.py)."""

from __future__ import annotations

from pathlib import Path

from mesh.config import MeshConfigError, TierSpec, load_mesh

__all__ = ["TierSpec", "read_mesh"]


def read_mesh(path: str | Path, only: list[str] | None = None) -> list[TierSpec]:
    """The tiers of a mesh file (all, or those named in `only`); a bad file or name exits with its message."""
    try:
        specs = load_mesh(path).tiers
    except MeshConfigError as e:
        raise SystemExit(str(e)) from None
    if only:
        unknown = set(only) - {s.name for s in specs}
        if unknown:
            raise SystemExit(f"{path}: no tier named {', '.join(sorted(unknown))}")
        specs = [s for s in specs if s.name in only]
    return specs
