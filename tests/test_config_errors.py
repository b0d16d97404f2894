"""A typo in the mesh file stops every program that reads it at start, naming the file and the field."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.harness import REPO, free_port, subprocess_env

TYPOS = {
    # where the typo is: (the mesh file's change, the field path the message must name)
    "serve block": (lambda m: m["tiers"][0]["serve"].update(kv_cache_gbi=0.25), "tiers[t0].serve.kv_cache_gbi"),
    "router settings": (lambda m: m["breaker"].update(failure_treshold=3), "breaker.failure_treshold"),
}
PROGRAMS = {
    "router": lambda path: ["-m", "router", "--config", path],
    "launcher": lambda path: ["-m", "launcher", "--config", path],
    "profiler": lambda path: ["-m", "profiler", "--mesh", path, "--out", path + ".profiles.yaml"],
}


@pytest.mark.parametrize("typo", TYPOS)
@pytest.mark.parametrize("program", PROGRAMS)
def test_a_typo_in_the_mesh_file_exits_at_start_naming_the_field(tmp_path, program, typo):
    """router, launcher and profiler exit non-zero before starting anything, with the field in the message."""
    mesh = {"listen": f"127.0.0.1:{free_port()}", "breaker": {},
            "tiers": [{"name": "t0", "address": f"127.0.0.1:{free_port()}", "serve": {"engine": "fake"}}]}
    change, field = TYPOS[typo]
    change(mesh)
    path = tmp_path / "mesh.yaml"
    path.write_text(yaml.safe_dump(mesh))
    done = subprocess.run([sys.executable, *PROGRAMS[program](str(path))], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert f"{field}: unknown field" in done.stderr and str(path) in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
