"""The TypeScript client (clients/typescript) passes its node:test suite against a real router over fake tiers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.harness import REPO

PACKAGE = REPO / "clients" / "typescript"


@pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="node and npm are not on PATH: the TypeScript client's tests need Node 20+ and npm",
)
def test_typescript_client_suite_passes():
    """`npm ci` from the lockfile, then `npm test`: generated code current, build, and every node:test test green."""
    env = {**os.environ, "QARR_PYTHON": sys.executable}
    for argv in (["npm", "ci", "--no-audit", "--no-fund"], ["npm", "test"]):
        result = subprocess.run(argv, cwd=PACKAGE, env=env, capture_output=True, text=True, timeout=600)
        output = (result.stdout + result.stderr)[-12000:]
        assert result.returncode == 0, f"{' '.join(argv)} failed in {PACKAGE}:\n{output}"
    assert "# fail 0" in result.stdout, output
