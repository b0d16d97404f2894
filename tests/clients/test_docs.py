"""The README lines in docs/sdk.md work exactly as shown (against a router named by QARR_TARGET)."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import sys

from tests.clients.conftest import REPO, cli_env, running_mesh
from tests.clients.fakes import RecordingEngine

DOC = (REPO / "docs" / "sdk.md").read_text()


def block(marker: str) -> str:
    """The fenced code block right after `<!-- readme:MARKER -->`."""
    match = re.search(rf"<!-- readme:{marker} -->\n```\w+\n(.*?)```", DOC, re.S)
    assert match, f"no readme:{marker} block in docs/sdk.md"
    return match.group(1)


async def run(argv: list[str], cwd, env) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(*argv, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode()


def test_the_batch_script_is_five_lines():
    """The README batch script is five lines."""
    assert len(block("batch-script").strip().splitlines()) == 5


async def test_readme_batch_script_and_cli_commands_work_as_shown(tmp_path):
    """The five-line script writes 100 results; then each CLI line exits 0 (batch finding all done)."""
    engine = RecordingEngine(model="fake-smollm2")
    async with running_mesh({"smollm2-fp32": engine}) as router:  # the README pins a tier of mesh.yaml
        env = {**cli_env(), "QARR_TARGET": router}
        code, out, err = await run([sys.executable, "-c", block("batch-script")], tmp_path, env)
        assert code == 0, err
        assert "100 results written to results.jsonl" in out
        assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 100

        for line in block("cli").strip().splitlines():
            argv = shlex.split(line)
            assert argv[0] == "qarr"
            code, out, err = await run([sys.executable, "-m", "clients.cli", *argv[1:]], tmp_path, env)
            assert code == 0, f"{line}: {err}"
        assert "100 already done" in err  # the last line re-ran the batch: nothing resent
        assert len(engine.requests) == 102
        results = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
        assert all(r["error"] is None and r["tier"] == "smollm2-fp32" for r in results)
