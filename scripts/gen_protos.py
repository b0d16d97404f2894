"""Regenerate the Python stubs beside the .proto files.

    python scripts/gen_protos.py            # write protos/qarr/v1/*_pb2*.py
    python scripts/gen_protos.py --check    # exit 1 if the committed stubs are stale

With -I protos the generated imports read `from qarr.v1 import ...`, matching
the proto package, so no post-processing is needed.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out_dir: Path) -> list[Path]:
    sources = sorted(PROTOS.glob("qarr/v1/*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(s.relative_to(PROTOS)) for s in sources],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    return sorted(p.relative_to(out_dir) for p in out_dir.rglob("*.py*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed stubs differ")
    args = parser.parse_args()
    if not args.check:
        generate(PROTOS)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        stale = [str(p) for p in fresh if not (PROTOS / p).exists() or not filecmp.cmp(Path(tmp) / p, PROTOS / p, shallow=False)]
    if stale:
        print("stale generated stubs (run: python scripts/gen_protos.py):", *stale, sep="\n  ")
        return 1
    print(f"{len(fresh)} generated stub files are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
