"""The manifest every quantized folder carries (qarr-quant.json): what it was made from, and how."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, Field

MANIFEST_NAME = "qarr-quant.json"
MANIFEST_VERSION = 1


class Calibration(BaseModel):
    path: str
    sha256: str
    samples: int
    seq_len: int


class Manifest(BaseModel):
    version: int = MANIFEST_VERSION
    base_model: str
    base_model_sha256: str  # of the base folder's config.json and *.safetensors, in name order
    scheme: str
    method: str = "rtn"  # rtn | gptq
    label: str
    recipe: str
    calibration: Calibration | None = None
    libraries: dict[str, str] = Field(default_factory=dict)
    created: str
    duration_s: float
    machine: str = ""


def folder_sha256(folder: str | Path) -> str:
    """One hash over a model folder's config.json and weight files (names and bytes)."""
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted([folder / "config.json", *folder.glob("*.safetensors")]):
        if path.is_file():
            h.update(path.name.encode())
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def write_manifest(folder: str | Path, manifest: Manifest) -> Path:
    path = Path(folder) / MANIFEST_NAME
    path.write_text(json.dumps(manifest.model_dump(), indent=2) + "\n")
    return path


def read_manifest(folder: str | Path) -> Manifest:
    return Manifest.model_validate_json((Path(folder) / MANIFEST_NAME).read_text())
