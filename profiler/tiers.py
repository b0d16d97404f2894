"""Tiers to profile: read from a mesh file (the profiler starts them through launcher/process.py)."""

from __future__ import annotations

from pathlib import Path

from mesh.config import ClientTLS, MeshConfigError, TierSpec, load_mesh

__all__ = ["TierSpec", "read_mesh", "read_tier_tls"]


def read_tier_tls(path: str | Path) -> ClientTLS | None:
    """How the mesh file's router reaches its tiers (upstream_tls): the profiler calls them the same way."""
    try:
        return load_mesh(path).upstream_tls
    except MeshConfigError as e:
        raise SystemExit(str(e)) from None


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
