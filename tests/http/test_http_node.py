"""The official openai npm package passes its node:test suite against the HTTP door (tests/http_node/)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.harness import REPO

PACKAGE = REPO / "tests" / "http_node"
NO_NODE = shutil.which("node") is None or shutil.which("npm") is None


def npm(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run npm in tests/http_node; fails with the tail of its output."""
    result = subprocess.run(["npm", *argv], cwd=PACKAGE, env={**os.environ, "QARR_PYTHON": sys.executable, **(env or {})},
                            capture_output=True, text=True, timeout=600)
    output = (result.stdout + result.stderr)[-12000:]
    assert result.returncode == 0, f"npm {' '.join(argv)} failed in {PACKAGE}:\n{output}"
    return result


@pytest.mark.skipif(NO_NODE, reason="node and npm are not on PATH: the openai npm tests need Node 20+ and npm")
def test_openai_npm_package_suite_passes():
    """`npm ci` from the lockfile, then node --test: stream, answers, [DONE], models, 404/400, abort, 429."""
    npm("ci", "--no-audit", "--no-fund")
    result = npm("test")
    assert "# fail 0" in result.stdout and "# pass 7" in result.stdout, result.stdout[-4000:]
